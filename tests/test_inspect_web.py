"""Inspector pages and JSON API (issue 9 §2–4): token → 401 without it, read-only, no personal data,
the same facts as the case file; and the ClickHouse-backed store gives the same case file as the files."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from builders import CLINIC, PHARMACY, read_jsonl
from pydantic import SecretStr
from test_inspect import INSTITUTIONS, full_ladder, upload_only

from monitor.inspect.model import build_case_file
from monitor.inspect.store import ClickHouseStore, FileStore
from monitor.inspect.web import COOKIE, InspectorApp, Response, make_server, session_value
from monitor.records import Institution

TOKEN = "s3cret-inspector-token"
CERTNO_18 = re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("city")
    out, _ = full_ladder(tmp)
    return out, tmp


@pytest.fixture()
def app(replayed: tuple[Path, Path]) -> InspectorApp:
    out, tmp = replayed
    store = FileStore(out, registry=tmp / "in" / "institutions.jsonl")
    return InspectorApp(store, upload_only(tmp), token=SecretStr(TOKEN))


def get(app: InspectorApp, path: str, query: dict[str, list[str]] | None = None, token: str | None = TOKEN,
        cookie: str | None = None) -> Response:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        headers["Cookie"] = cookie
    return app("GET", path, query or {}, headers)


def no_personal_data(resp: Response) -> None:
    text = resp.body.decode()
    assert not CERTNO_18.search(text), CERTNO_18.search(text)
    assert "王小明" not in text and "张三" not in text


@pytest.mark.parametrize("path", ["/", "/institutions/" + PHARMACY, "/api/institutions",
                                  "/api/institutions/" + PHARMACY])
@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_without_the_token_every_data_route_is_401(app: InspectorApp, path: str, token: str | None) -> None:
    resp = get(app, path, token=token)
    assert resp.status == 401
    assert ("WWW-Authenticate", 'Bearer realm="medins-monitor"') in resp.headers
    assert PHARMACY not in resp.body.decode() and "惠民" not in resp.body.decode()


def test_with_the_token_the_api_returns_the_case_file(app: InspectorApp, replayed: tuple[Path, Path]) -> None:
    out, _ = replayed
    resp = get(app, "/api/institutions/" + PHARMACY)
    assert resp.status == 200 and resp.content_type.startswith("application/json")
    data = json.loads(resp.body)
    assert data["institution"]["name"] == "鄂城区惠民大药房" and data["state"] == "terminated"
    assert data["tickets_by_action"] == {"SUSPEND_OUTPATIENT_POOLING": 1, "TERMINATE_OUTPATIENT_POOLING": 1}
    ids = {t["ticket_id"] for t in read_jsonl(out / "tickets.jsonl") if t["fixmedins_code"] == PHARMACY}
    assert {e["id"] for e in data["timeline"] if e["kind"] == "ticket"} == ids
    listing = json.loads(get(app, "/api/institutions", {"state": ["terminated"]}).body)
    assert [r["code"] for r in listing["institutions"]] == [PHARMACY] and listing["count"] == 1
    assert get(app, "/api/institutions/P00000000000").status == 404
    for resp in (get(app, "/api/institutions/" + PHARMACY), get(app, "/api/institutions")):
        no_personal_data(resp)
        assert ("Cache-Control", "no-store") in resp.headers


def test_pages_show_the_facts_in_both_languages(app: InspectorApp) -> None:
    page = get(app, "/institutions/" + PHARMACY).body.decode()
    for fact in ("鄂城区惠民大药房", "定点零售药店 / retail pharmacy", "鄂城区 (420704)", "2026-01-01 → 2026-12-31",
                 "已终止/取消 terminated", "终止门诊统筹定点资格", "2026-01-13 → 2026-02-13", "EZ-DM 二(一)",
                 "1 个月后仍未实现实时上传的，终止其门诊统筹定点资格", "下一检查节点", "Next deadline", "时间线"):
        assert fact in page, fact
    listing = get(app, "/", {"sort": ["recency"], "region": ["420703"]}).body.decode()
    assert "华容区社区诊所" in listing and "惠民大药房" not in listing
    assert "被标记机构" in listing and "Flagged institutions" in listing
    no_personal_data(get(app, "/institutions/" + PHARMACY))
    no_personal_data(get(app, "/"))


def test_read_only_and_login_cookie(app: InspectorApp) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert app(method, "/api/institutions", {}, {"Authorization": f"Bearer {TOKEN}"}).status == 405
    assert app("POST", "/login", {}, {}, b"token=nope").status == 401
    ok = app("POST", "/login", {}, {}, f"token={TOKEN}".encode())
    assert ok.status == 303
    cookie = dict(ok.headers)["Set-Cookie"]
    assert TOKEN not in cookie and "HttpOnly" in cookie
    value = cookie.split(";")[0]
    expires = int(value.split("=", 1)[1].split(".")[0])
    assert value == f"{COOKIE}={session_value(TOKEN, expires)}"
    assert get(app, "/", token=None, cookie=value).status == 200
    assert get(app, "/", token=None, cookie=f"{COOKIE}=forged").status == 401
    assert get(app, "/healthz", token=None).status == 200
    assert get(app, "/static/style.css", token=None).status == 200


def test_no_token_configured_serves_openly(replayed: tuple[Path, Path]) -> None:
    out, tmp = replayed
    open_app = InspectorApp(FileStore(out, registry=tmp / "in" / "institutions.jsonl"), upload_only(tmp))
    assert get(open_app, "/api/institutions", token=None).status == 200


@pytest.fixture()
def server(app: InspectorApp) -> Iterator[str]:
    srv = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def fetch(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_http_server_answers_401_then_200(server: str) -> None:
    assert fetch(server + "/api/institutions")[0] == 401
    status, body = fetch(server + "/api/institutions/" + CLINIC, TOKEN)
    assert status == 200 and json.loads(body)["state"] == "normal"


# ------------------------------------------------------------------------------------------ ClickHouse
def test_clickhouse_store_gives_the_same_case_file(tmp_path: Path) -> None:
    from monitor.sinks.clickhouse import ClickHouseSink, connect

    dsn = f"chdb://{tmp_path / 'ch'}"
    sink = ClickHouseSink(dsn, tmp_path / "buf")
    out, _ = full_ladder(tmp_path, sinks=[sink])
    files = FileStore(out, registry=tmp_path / "in" / "institutions.jsonl")
    client, db = connect(dsn)
    try:
        ch = ClickHouseStore(client, db)
        # the sink stored the registry the engine saw
        assert {c: i.fixmedins_name for c, i in ch.institutions().items()} == {
            i["fixmedins_code"]: i["fixmedins_name"] for i in INSTITUTIONS}
        assert isinstance(ch.institutions()[PHARMACY], Institution)
        pack = upload_only(tmp_path)
        for code in (PHARMACY, CLINIC):
            a = build_case_file(ch, code, pack)
            b = build_case_file(files, code, pack)
            assert a is not None and b is not None
            assert a.model_dump(exclude={"daily"}) == b.model_dump(exclude={"daily"})
        # institution_daily rows feed the charts: the pharmacy's 01-10 had 20 records, 10 late
        daily = {r["day"]: r for r in ch.daily(PHARMACY)}
        assert daily[date(2026, 1, 10)]["late"] == 10
        app = InspectorApp(ch, pack, token=SecretStr(TOKEN))
        page = get(app, "/institutions/" + PHARMACY)
        assert page.status == 200 and "Upload lag p90" in page.body.decode()
        no_personal_data(page)
    finally:
        client.close()


def test_the_same_handlers_mount_on_aiohttp(app: InspectorApp) -> None:
    """The Faust web server's driver is aiohttp: the adapter serves the same routes and the same 401."""
    import asyncio

    from aiohttp.test_utils import make_mocked_request

    from monitor.inspect.web import aiohttp_handler

    handler = aiohttp_handler(app)
    ok = asyncio.run(handler(make_mocked_request("GET", "/api/institutions?state=normal",
                                                 headers={"Authorization": f"Bearer {TOKEN}"})))
    assert ok.status == 200
    assert [r["code"] for r in json.loads(ok.body)["institutions"]] == [CLINIC]  # type: ignore[arg-type]
    denied = asyncio.run(handler(make_mocked_request("GET", "/api/institutions")))
    assert denied.status == 401
