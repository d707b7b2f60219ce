"""``legcf compare``'s harness: named sets of configurations, run one run directory each.

- :mod:`~legcf_core.experiments.sets`: the rows and the paper's named sets, what each
  trains with and where its run lives (torch-free, so the CLI lists them cheaply);
- :mod:`~legcf_core.experiments.runner`: train or resume each configuration, move
  stale runs aside, collect finished results;
- :mod:`~legcf_core.experiments.summary`: results as table rows, means and spread.

Tables and plots of the rows are the CLI's (``legcf_cli.compare_report``). This
package imports nothing on its own, so importing ``sets`` stays light.
"""
