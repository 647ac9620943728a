"""The StyleGAN2 FastAPI app the plugin mounts in the Airflow api-server.

HTML pages and a JSON API behind Airflow's login, read-only over the version store; the
GitHub webhook beside them, protected by its signature instead. Blocking work (store reads,
thumbnails, Graphviz) runs in sync handlers, which FastAPI runs in its thread pool.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from stylegan_airflow.ui import files, views
from stylegan_airflow.ui.auth import LoginRequiredError, require_user, wants_html
from stylegan_airflow.ui.catalog import Catalog, UIError, ref_of_input, refused

PREFIX = "/stylegan"
HERE = Path(__file__).resolve().parent
KNOWN_DAGS = ("stylegan2_prepare", "stylegan2_train", "stylegan2_watch_repo")
SVG_ID_RE = re.compile(r'\bid="')  # Graphviz's SVG refers to none of its ids
# Pages need nothing from elsewhere, and only the Airflow UI (same origin) may frame them.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                "script-src 'none'; object-src 'none'; frame-ancestors 'self'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def human_size(n: int) -> str:
    """Bytes for people: ``1536`` → ``1.5 KiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def short_ref(ref: str) -> str:
    """``name@<64 hex>`` → ``name@<10 hex>`` for display; other refs unchanged."""
    name, at, vid = str(ref).partition("@")
    return f"{name}@{vid[:10]}" if at else str(ref)


def truncated(text: object, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (the page gives the whole
    value in a title)."""
    text = str(text or "")
    return text if len(text) <= width else text[:width - 1] + "…"


def short_run(run_id: object, width: int) -> str:
    """A run id where a cell is narrow: without the ``manual__``/``scheduled__``/``commit__``
    kind that every run shares a few of, cut to ``width`` (the page gives it whole in a
    title)."""
    text = str(run_id or "")
    kind, sep, rest = text.partition("__")
    return truncated(rest if sep and kind.isalpha() and rest else text, width)


def _env() -> Environment:
    env = Environment(loader=PackageLoader("stylegan_airflow.ui", "templates"),
                      autoescape=select_autoescape(("html",)), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update({"size": human_size, "short": lambda s: str(s or "")[:12],
                        "shortref": short_ref, "trunc": truncated, "shortrun": short_run,
                        "q": lambda s: quote(str(s), safe=":@"),
                        "qpath": lambda s: quote(str(s), safe="/")})
    env.tests["ref"] = lambda s: isinstance(s, str) and ref_of_input(s) is not None
    return env


templates = Jinja2Templates(env=_env())


def catalog(request: Request) -> Catalog:
    """The store this request reads (FastAPI dependency)."""
    root = request.app.state.store_root
    if root is None:
        from airflow.sdk.exceptions import AirflowException

        from stylegan_airflow.runners import store_path

        try:
            root = store_path()  # read per request: STYLEGAN_STORE is the operators' setting
        except AirflowException as exc:  # a relative STYLEGAN_STORE: the page says so
            raise UIError(500, str(exc)) from exc
    return Catalog(Path(root))


def bases(request: Request) -> tuple[str, str]:
    """(this app's URL prefix, the Airflow UI's base) as seen by the browser."""
    base = str(request.scope.get("root_path", "")).rstrip("/")
    return base, base.removesuffix(PREFIX)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the URL bases and the page security headers."""
    base, airflow = bases(request)
    response = templates.TemplateResponse(request, template, {
        "base": base, "airflow": airflow, "section": template.split(".")[0], **context},
        status_code=status)
    response.headers.update(PAGE_HEADERS)
    return response


CatalogDep = Depends(catalog)
pages = APIRouter(dependencies=[Depends(require_user)], default_response_class=HTMLResponse)
api = APIRouter(prefix="/api", dependencies=[Depends(require_user)])


# --- HTML pages ---------------------------------------------------------------------------

@pages.get("/")
def index(request: Request, cat: Catalog = CatalogDep) -> HTMLResponse:
    """Every name in the store with its versions and lineage."""
    return page(request, "versions.html", names=views.overview(cat, bases(request)[1]),
                store=cat.root, empty=not cat.exists(), skipped=cat.skipped())


@pages.get("/names/{name}")
def name_page(request: Request, name: str, cat: Catalog = CatalogDep) -> HTMLResponse:
    """All versions of one name."""
    rows = [views.version_row(cat, v, bases(request)[1]) for v in cat.versions(name)]
    return page(request, "name.html", name=name, rows=rows)


@pages.get("/versions/{ref}")
def version_page(request: Request, ref: str, cat: Catalog = CatalogDep) -> HTMLResponse:
    """One version: lineage, reuse, metadata, metrics, images, files."""
    view = cat.resolve(ref)
    context = views.version_context(cat, view, bases(request)[1], bases(request)[0])
    own = f"names/{view.version.name}/"  # the page reads every name, but speaks of one
    return page(request, "version.html", **context,
                skipped={p: why for p, why in cat.skipped().items() if p.startswith(own)})


@pages.get("/runs/{dag_id}/{run_id}")
def run_page(request: Request, dag_id: str, run_id: str,
             cat: Catalog = CatalogDep) -> HTMLResponse:
    """The versions one DAG run made or reused (the DAG run tab in the Airflow UI)."""
    base, airflow = bases(request)
    rows = views.run_rows(cat, checked_dag_id(dag_id), run_id, airflow, base)
    # the commits this run's own versions record; a reused version carries its maker's
    commits = sorted({r["lineage"]["git_commit"] for r in rows
                      if r["origin"] == "made" and r["lineage"]["git_commit"]})
    return page(request, "run.html", dag_id=dag_id, run_id=run_id, rows=rows, commits=commits,
                run_url=f"{airflow}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
                skipped=cat.skipped())


@pages.get("/metrics")
def metrics_page(request: Request, cat: Catalog = CatalogDep) -> HTMLResponse:
    """Each metric across evaluation versions, as a table and charts."""
    return page(request, "metrics.html", **views.metrics_overview(cat))


@pages.get("/images")
def images_page(request: Request, run: str | None = None, generated: str | None = None,
                dataset: str | None = None, cat: Catalog = CatalogDep) -> HTMLResponse:
    """Reals, fakes over training progress and generated seeds."""
    return page(request, "images.html", **views.images_context(cat, run, generated, dataset))


@pages.get("/compare")
def compare_page(request: Request, a: str | None = None, b: str | None = None,
                 cat: Catalog = CatalogDep) -> HTMLResponse:
    """Two versions side by side; with none chosen, the newest version of a name and its
    predecessor, and with one chosen, that one and its predecessor."""
    choices = list(cat.all_versions())
    how = "chosen"
    if bool(a) != bool(b):
        a, b = views.lone_pair(cat, str(a or b))
        how = "one"
    elif not a and (pair := views.default_pair(cat)):
        (a, b), how = pair, "default"
    result = None
    if a and b:
        result = views.compare(cat, cat.resolve(a), cat.resolve(b), bases(request)[1])
    return page(request, "compare.html", choices=choices, a=a, b=b, result=result, how=how)


@pages.get("/graph")
def graph_index(request: Request) -> HTMLResponse:
    """The workflow graphs of the StyleGAN2 DAGs, each drawn inline."""
    graphs = [_inline_graph(d) for d in KNOWN_DAGS]
    return page(request, "graph.html", dag_ids=KNOWN_DAGS, dag_id=None, graphs=graphs)


@pages.get("/graph/{dag_id}")
def graph_page(request: Request, dag_id: str) -> HTMLResponse:
    """One DAG as an inline SVG coloured by function."""
    graph = _inline_graph(checked_dag_id(dag_id))
    if graph["status"] in (400, 404):
        raise UIError(404, graph["error"])
    return page(request, "graph.html", dag_ids=KNOWN_DAGS, dag_id=dag_id, graphs=[graph])


def _inline_graph(dag_id: str) -> dict[str, Any]:
    """One DAG's SVG ready to inline, or why it cannot be drawn (Graphviz missing, a DAG
    that does not parse): said on the page, so one graph never takes the others down."""
    from markupsafe import Markup

    try:
        svg = _graph(dag_id, "svg")
    except UIError as exc:
        return {"dag_id": dag_id, "svg": None, "error": exc.message, "status": exc.status}
    body = svg[svg.find("<svg"):]  # drop the XML prolog and doctype to inline it
    # Graphviz numbers ids from 1 in every drawing: keep them unique on a page of several
    body = SVG_ID_RE.sub(f'id="{dag_id}-', body)
    return {"dag_id": dag_id, "svg": Markup(body),  # noqa: S704 - Graphviz escapes labels
            "error": None, "status": 200}


@pages.get("/graph/{dag_id}/graph.{fmt}", response_class=Response)
def graph_file(dag_id: str, fmt: str) -> Response:
    """One DAG as an SVG or DOT file."""
    if fmt not in ("svg", "dot"):
        raise UIError(404, f"no graph format {fmt!r}; use svg or dot")
    kind = "image/svg+xml" if fmt == "svg" else "text/vnd.graphviz; charset=utf-8"
    return Response(_graph(dag_id, fmt), media_type=kind,
                    headers={"Content-Security-Policy": "default-src 'none'; style-src "
                             "'unsafe-inline'", "X-Content-Type-Options": "nosniff"})


def _graph(dag_id: str, fmt: str) -> str:
    """The workflow graph from the DAG serialized in Airflow's DB, else the DAG folder."""
    from stylegan_airflow import graph
    from stylegan_ops.errors import StageError

    dag_id = checked_dag_id(dag_id)
    try:
        dag = _serialized_dag(dag_id)
        return graph.render_dag(dag, fmt) if dag is not None else graph.render(dag_id, fmt)
    except StageError as exc:
        raise UIError(404 if "unknown DAG" in str(exc) else 500, str(exc)) from exc


def checked_dag_id(dag_id: str) -> str:
    """A DAG id from a URL, refused (400) unless it is one."""
    from stylegan_airflow.graph import check_dag_id
    from stylegan_ops.errors import StageError

    try:
        return check_dag_id(dag_id)
    except StageError as exc:
        raise refused(str(exc)) from exc


def _serialized_dag(dag_id: str) -> Any:
    try:
        from airflow.models.dagbag import DBDagBag
        from airflow.utils.session import create_session

        with create_session() as session:
            return DBDagBag().get_latest_version_of_dag(dag_id, session=session)
    except Exception:  # noqa: BLE001 - no metadata DB here (tests, CLI): parse the folder
        return None


# --- files ------------------------------------------------------------------------------

@pages.get("/files/{ref}/{path:path}", response_class=Response)
def file(request: Request, ref: str, path: str, download: bool = False,
         cat: Catalog = CatalogDep) -> Response:
    """One file of a version, streamed."""
    return files.serve_file(cat, request, cat.resolve(ref), ref, path, download)


@pages.get("/thumbs/{size}/{ref}/{path:path}", response_class=Response)
def thumbnail(request: Request, size: str, ref: str, path: str,
              cat: Catalog = CatalogDep) -> Response:
    """A cached JPEG thumbnail of one image of a version."""
    if not size.isdigit():
        raise refused(f"bad thumbnail size {size!r}")
    return files.serve_thumbnail(cat, request, cat.resolve(ref), ref, path, int(size))


# --- JSON API ---------------------------------------------------------------------------

@api.get("/versions")
def api_versions(request: Request, cat: Catalog = CatalogDep) -> Any:
    """Every name and version, as JSON."""
    names = views.overview(cat, bases(request)[1], None)
    return {"store": str(cat.root), "names": names, "skipped": cat.skipped()}


@api.get("/versions/{ref}")
def api_version(request: Request, ref: str, cat: Catalog = CatalogDep) -> Any:
    """One version with its manifest, cache key and uses, as JSON."""
    view = cat.resolve(ref)
    base, airflow = bases(request)
    return {**views.version_row(cat, view, airflow), "manifest": view.manifest.to_dict(),
            "results": cat.results(view),
            "generation": cat.generation(view) if view.kind == "generated" else None,
            "cache": views.cache_info(cat, view.version.lineage),
            "continued": views.continued_info(cat, view.version.lineage),
            "uses": views.use_rows(cat, view, base), "skipped": cat.skipped()}


@api.get("/metrics")
def api_metrics(cat: Catalog = CatalogDep) -> Any:
    """The metrics table and the metrics of training versions over kimg, as JSON."""
    data = views.metrics_overview(cat)
    return {"keys": data["keys"], "rows": data["rows"], "stand_in": data["stand_in"],
            "training": [{"ref": r["ref"], **r["data"]} for r in data["training"]]}


@api.get("/compare")
def api_compare(request: Request, a: str, b: str, cat: Catalog = CatalogDep) -> Any:
    """A comparison of two versions, as JSON."""
    result = views.compare(cat, cat.resolve(a), cat.resolve(b), bases(request)[1])
    result["images"] = [{"path": i["path"], "in_a": i["a"] is not None,
                         "in_b": i["b"] is not None} for i in result["images"]]
    return result


@api.get("/runs/{dag_id}/{run_id}")
def api_run(request: Request, dag_id: str, run_id: str, cat: Catalog = CatalogDep) -> Any:
    """The versions one DAG run made or reused, as JSON."""
    base, airflow = bases(request)
    rows = views.run_rows(cat, checked_dag_id(dag_id), run_id, airflow, base)
    return {"versions": rows, "skipped": cat.skipped()}


# --- the app ------------------------------------------------------------------------------

def _is_api(request: Request) -> bool:
    return "/api/" in str(request.scope.get("path", "")) or not wants_html(request)


def create_app(store_root: Path | str | None = None, webhook: Any = None) -> FastAPI:
    """The app; ``store_root`` None reads STYLEGAN_STORE per request, ``webhook`` None uses
    Airflow (tests pass their own environment)."""
    from stylegan_airflow.webhook import AirflowEnv, make_router

    app = FastAPI(title="StyleGAN2", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store_root = store_root
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(make_router(webhook or AirflowEnv()))
    app.include_router(api)
    app.include_router(pages)

    @app.exception_handler(UIError)
    def ui_error(request: Request, exc: UIError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        return page(request, "error.html", status=exc.status, message=exc.message,
                    code=exc.status)

    @app.exception_handler(LoginRequiredError)
    def login(request: Request, exc: LoginRequiredError) -> Response:
        return RedirectResponse(exc.login_url, status_code=303)

    return app
