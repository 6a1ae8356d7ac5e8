"""The server's routers, one module per concern; :func:`dse.server.app.create_app` wires them.

``info`` (``/health``, ``/info``), ``search`` (``POST /search``), ``pages`` (page images, GET and
HEAD), ``similarity`` (similarity maps), ``answer`` (``POST /answer``), ``web`` (the web page, its
favicon and static files, the offline API docs).
"""
