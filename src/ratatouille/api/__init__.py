"""The REST API (``/api/v1``): a thin FastAPI layer over ``Workspace``, served by ``rat serve``.

FastAPI is imported only in this package. ``create_app`` (in ``app``) builds the application,
``server.serve`` runs it with uvicorn.
"""
