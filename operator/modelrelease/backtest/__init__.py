"""`modelrelease backtest`: replay a release's analysis against Prometheus history.

``replay`` runs the operator's own analysis (the core's requests, the runtime's reads, the core's
verdicts and counting) at each interval of a past time range; ``table`` prints what each run found and
what the release would have done; ``chart`` draws it; ``main`` is the command.
"""
