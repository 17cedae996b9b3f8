"""The console: `GET /ui` on the gateway, a server-rendered page for watching the fleet,
answering the review queue and promoting versions (`routes.py` the HTTP layer, `pages.py`
what each page shows, `access.py` sign-in, roles and CSRF, `charts.py` inline SVG plots).
Plain HTML with a little script; every file is served by the gateway itself."""
