"""The dashboard's pages, one module a page: each builds its view in a worker thread and renders a template."""
