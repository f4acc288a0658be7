"""Package data: the default jinja2 templates (installed as ``synapse.templates``)."""
