"""Reports people look at: one folder per run with report.html (inline CSS, no network, no
script), report.json (what ``prune --json`` prints, the command that reproduces the run, and
what the page adds) and the figures as PNG files beside the page.

``check_target(folder)`` runs before any work; ``write_report(folder, data)`` once the model is
written (the ``report`` pass, after ``write``)."""

from .build import DATA, render_html
from .folder import PAGE, check_apart, check_target, is_report_file, write_report

__all__ = ["DATA", "PAGE", "check_apart", "check_target", "is_report_file", "render_html",
           "write_report"]
