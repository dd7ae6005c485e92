"""The web console's plumbing (its routes are in `api/routes/console*.py`).

- `web`: the templates (Jinja2, autoescaped) and their filters, the security headers (a CSP
  that allows nothing from another origin and no inline script or style), the route class
  that turns errors into pages, and the session and CSRF checks;
- `charts`: bar charts as inline SVG, computed on the server;
- `story`: a recovery's whole story, assembled from the store for its page.
"""
