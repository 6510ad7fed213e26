"""`make bench`: throughput and latency of the claim path on this machine, all from one run.

Phases, each against scratch stores (database quanyi_bench, Redis db 11 and 12, prefix qyb):

  noop     a bare aiohttp + uvloop endpoint answering 201: the framework's ceiling
  lua      lua/claim.lua alone, driven by redis-benchmark with EVALSHA (FCALL of the same code
           when another client keeps flushing the script cache), with the arguments
           ClaimService builds, recorded rather than rebuilt here
  api-1    `quanyi serve`, one process, wrk replaying unique pre-signed claims
  api-2    `quanyi serve --workers 2`, the same
  ledger   `quanyi worker ledger` runs through both API phases: catch-up time and lag
  memory   Redis bytes per grant once the ledger has caught up and the outbox is trimmed
  rowlock  the same claim as a PostgreSQL row-lock transaction, 64 concurrent asyncpg tasks

The load generator shares the two cores with the service, Redis and PostgreSQL, so the ratios
between figures of one run, and the CPU time per claim of each process, mean more than any
absolute rate.

    python -m loadtests.bench [--duration S] [--quick] [--threads N] [--connections N] [--keep]

The package: `phases` runs them, `stores` sets up and measures the scratch stores, `lua` and
`rowlock` are the two baselines without HTTP, `metrics` reads the workers' Prometheus figures,
`results` holds what was measured and `report` prints it.
"""
