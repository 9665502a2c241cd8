"""The national trace-code tier (design §2 "Two tiers"): pure rules (``rules``), the Faust app
(``app``, ``monitor trace-worker``), the in-process run of several cities (``multicity``) and the city
engine's intake of trace findings (``city``)."""
