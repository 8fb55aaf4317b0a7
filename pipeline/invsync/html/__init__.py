"""The shared look: Jinja2 templates and the static CSS/JS (see :mod:`invsync.html.render`)."""
