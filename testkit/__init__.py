"""Development helpers shared by the tests and the benchmarks (not part of the product: not
installed, imported by nothing under ``services/`` or ``ui/``).

- ``fakes``: contract objects of a small family (snapshots, servers, messages, event envelopes);
- ``demo_stack``: ``openchat up --demo`` in a temp home, run as a subprocess and awaited by its output.
- ``voice_peers``: remote voice participants (aiortc mesh peers, a PCM peer like the backend's joiner
  tool) and tone analysis, for the voice tests and bench_voice;
- ``hostile``: a deliberately hostile backend (test_hostile_backend, bench_hostile);
- ``connector_proc``: the connector and the devserver as processes, with a stream report;
- ``eventlog``: a member's events as they arrive, awaited by predicate;
- ``livestack``: ``openchat up`` as a live stack for the fault tests and bench_faults;
- ``stack_env``: the environment and the processes of a private ``openchat up`` home.

The benchmarks import from here, never from ``tests/``.
"""
