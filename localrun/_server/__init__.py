"""``localrun server``: a localrun root that receives pushes over HTTP (DESIGN §8).

Imported only by ``localrun server`` (and tests), never by ``import localrun``: it needs the
``server`` extra (starlette, uvicorn). ``objects`` is the storage side (plain functions on a
root, no HTTP), ``app`` the ASGI app around it; the dashboard of a later issue is served by
the same app.
"""
