"""`make bench-sustained`: whether the whole claim pipeline holds its rate, not only the API.

Claims for the whole measured window (60 s; --quick 10 s) with the ledger and fulfilment
workers running, against fresh scratch stores each time (database quanyi_bench_sustained, Redis
db 13, only keys under the `qybsu` prefix touched), for two topologies next to the no-op aiohttp
endpoint of the same run:

  run      `quanyi run`: the API and every worker in one process
  serve    `quanyi serve` with `quanyi worker ledger` and `quanyi worker fulfil` beside it

and two scenarios: a right with no vendor (fulfilled internally) and a right of the simulated
vendor at its default latency. Each reports claims/s and p50/p99/p99.9 (wrk replaying unique
pre-signed claims), every consumer group's lag when the load stops (entries not yet delivered
plus pending, and the age of the oldest), the outbox length sampled over the run and whether
it stayed bounded (watch.RULE), how long the groups took to drain, and CPU per claim of every
process (wrk, the API, the workers, the simulator, Redis, PostgreSQL's backends). With
--profile, py-spy samples every process of ours under the same load afterwards and the hottest
functions are printed.

    python -m loadtests.bench_sustained [--duration S] [--quick] [--profile] [--scenario S]
                                        [--topology T] [--connections N] [--max-rate R]

The package: `runs` runs them, `stores` sets up the stores and campaign and reads CPU, `watch`
samples the outbox and holds the boundedness rule, `profile` drives py-spy, `results` holds what
was measured and `report` prints it.
"""
