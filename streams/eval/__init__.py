"""External evaluations of the gate: replay a public benchmark through the real pipeline.

``trustplane eval agentdojo`` (:mod:`streams.eval.run`) replays AgentDojo's four task
suites (workspace, travel, banking, slack) through a real broker, a real gate worker and
the SDK guard, with the suites' own tool functions as the executed tools, and reports
utility, utility under attack, attack success rate, the share held for review and the
rule that stopped each injection.

One responsibility a module:

- :mod:`.errors` -- :class:`EvalError`;
- :mod:`.flatten` -- list-valued tool arguments as scalar intent parameters;
- :mod:`.dojo` -- AgentDojo's side: its tasks as replayable episodes (the interleaving
  rule), its tool functions as the executed tools, its checks on the post-environment;
- :mod:`.estate` -- a suite's estate: mapping, Cedar bundle, anomaly settings, agents;
- :mod:`.worker` -- a real ``trustplane worker`` process for a run;
- :mod:`.replay` -- episodes through guards, many at once;
- :mod:`.scoring` -- the tallies: utility, attack success, held, stopping rules;
- :mod:`.published` -- the figures published defences report on the same suites;
- :mod:`.report` -- markdown, JSON and a plot;
- :mod:`.run` -- the whole run: broker, worker per suite, estate, replay, report.
"""
