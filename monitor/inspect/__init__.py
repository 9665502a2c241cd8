"""Inspector case files (issue 9): what an agency inspector opens to review a flagged institution.

* ``model``   — the case file (institution, state, timeline with clauses and masked evidence, next
                deadline) built from what the monitor wrote, through a small ``CaseStore`` interface;
* ``store``   — stores: ClickHouse/chDB (the default embedded store), a replay's JSONL folder;
* ``clauses`` — verbatim clause excerpts of the regulations the rules cite;
* ``text``    — the terminal rendering (``monitor inspect``);
* ``web``     — read-only HTML pages and JSON API (``monitor serve``; mountable on the Faust web server).
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from monitor.settings import Settings


class InspectSettings(Settings):
    """Settings of the inspector pages, on top of the deployment settings (prefix ``MONITOR_``)."""

    #: Bearer token the pages and API require when set (``MONITOR_UI_TOKEN``); never logged.
    ui_token: SecretStr | None = None
    #: Lifetime of a ``/login`` session cookie, hours (``MONITOR_UI_SESSION_HOURS``); the cookie carries
    #: its expiry inside its HMAC, so an old cookie is refused by the server, not only by the browser.
    ui_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    #: Mark the session cookie ``Secure`` (``MONITOR_UI_COOKIE_SECURE``): set it when the pages are
    #: served over HTTPS (behind a TLS proxy); the browser then never sends the cookie in clear.
    ui_cookie_secure: bool = False
    #: Seconds ``monitor serve`` keeps a rendered list or case page (``MONITOR_UI_CACHE_SECONDS``; 0 = off):
    #: concurrent inspectors opening the same page cost one store read; a page is at most this far behind.
    ui_cache_seconds: float = Field(default=5.0, ge=0, le=3600)


def default_store() -> tuple[str | None, str | None]:
    """(DSN, password) of the store ``monitor replay``/``monitor demo`` write by default:
    ``MONITOR_STORE`` if set, else embedded chDB under ``MONITOR_DATA_DIR`` (``None`` when disabled)."""
    from monitor.sinks.config import SinkSettings

    conf = SinkSettings()
    password = conf.store_password.get_secret_value() if conf.store_password is not None else None
    return conf.store_dsn(), password
