"""`python -m loadtests.bench_fulfil [--quick]`: how fast one fulfilment worker empties a backlog,
and how long claims that wait for their fulfilment take.

Self-contained like the load test: database quanyi_benchfulfil (recreated), Redis db 12 (only
keys under the `qybf` prefix are touched), free ports, children always stopped.

  throughput   N grants made before one fulfilment worker starts, against a vendor answering in
               50 ms with max_in_flight 256: fulfilments/s against the bound in-flight/latency.
               Once unsigned (the worker's own cost), once RSA-signed both ways as registered
               vendors are (each side signs every call: CPU the unsigned run does not spend).
  wait_ms      API, ledger and fulfilment workers running, a 20 ms signed vendor: claims with
               wait_ms 800 at modest concurrency, latency and the share that came back fulfilled.

The ledger worker is off while a backlog drains, so the figure is the fulfilment worker's alone;
it starts afterwards and its catch-up time is reported too. Everything shares the machine's
cores with the load generator, Redis and PostgreSQL.
"""

# The package: `plan` holds the stores, vendors and sizes, `drain` times the backlogs, `waiting`
# the claims that wait, and `report` prints both.
