"""outputs/index.html: every run's sample grids by epoch, curves and scores side by side, on one static page.

One column per run. The page opens from disk with no server and no network (inline CSS and JS,
image paths relative to the page). A shared epoch slider, the left/right arrow keys or a link to
index.html#epoch=N move every run's fixed-noise grid together; a run with fewer epochs shows its
last grid greyed, with a note. write_index() reads only small files (config.json, the CSV files,
folder listings, through common/run_folders.py) and never raises on a bad run folder, so a
training run can call it at its end.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from common.run_folders import FILES, PICTURES, find_runs, load_run

PAGE = "index.html"
OWN_ROWS = ("script", "dataset", "epochs", "out_dir")  # not among the differing settings: shown apart, or always differ
SCORES = (  # (row title, metrics.csv column, its real-data floor)
    ("FID", "fid", "fid_floor"),
    ("KID", "kid", "kid_floor"),
    ("IS", "is", "is_real"),
    ("precision (k-NN)", "precision", "precision_floor"),
    ("recall (k-NN)", "recall", "recall_floor"),
    ("density (k-NN)", "density", "density_floor"),
    ("coverage (k-NN)", "coverage", "coverage_floor"),
    ("classes covered", "classes_covered", None),
    ("label accuracy", "label_acc", "label_acc_real"),
    ("test neg. ELBO", "test_neg_elbo", None),
    ("test IWAE", "test_iwae", None),
)
PER_CLASS = (  # the first kind of per-class column a run has is shown
    ("share of samples per class", re.compile(r"share_(.+)")),
    ("label accuracy per class", re.compile(r"label_acc_(\d+)")),
)
DASH = '<span class="muted">&ndash;</span>'
MISSING_SCORES = '<span class="missing">no metrics yet</span>'

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f4f5f7}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #ddd;padding:8px 16px;
 display:flex;gap:24px;align-items:center;flex-wrap:wrap}
h1{font-size:18px;margin:0} .sub{color:#666} header label{font-weight:600}
input[type=range]{width:320px;vertical-align:middle} main{padding:12px 16px;overflow-x:auto}
table{border-collapse:separate;border-spacing:0;background:#fff;border:1px solid #ddd}
th,td{padding:6px 10px;border-bottom:1px solid #eee;vertical-align:top;text-align:left}
tbody th{position:sticky;left:0;background:#fafafa;font-weight:600;white-space:nowrap;color:#444;z-index:1}
td{width:400px;min-width:280px;max-width:480px} thead td{font-size:16px;font-weight:600;background:#fafafa}
td img{max-width:100%;display:block} img.grid{width:100%;image-rendering:pixelated;transition:filter .2s}
img.stale{filter:grayscale(1) opacity(.4)} .note{color:#777;font-size:12px;min-height:1.2em} .stale+.note{color:#a15c00}
.floor{color:#777;font-size:12px} .missing{color:#b00020} .muted{color:#888} ul{margin:0;padding-left:18px}
.cls{display:grid;grid-template-columns:auto 1fr 3.5em;gap:1px 6px;font-size:12px;align-items:center}
.cls i{display:block;height:9px;background:#5b8def;border-radius:2px} .cls b{font-weight:400;text-align:right}
details table{border:0;font-size:12px} details td,details th{padding:1px 6px;width:auto;min-width:0}
a{color:#1a5fb4} td img[src$=".gif"]{max-width:50%}
"""

JS = """
const slider = document.getElementById('epoch'), shown = document.getElementById('shown');
const grids = [...document.querySelectorAll('img.grid')];
function show(e) {
  e = Math.max(+slider.min, Math.min(+slider.max, Math.round(e) || +slider.max));
  slider.value = e; shown.textContent = e;
  for (const img of grids) {
    const list = JSON.parse(img.dataset.grids), last = list[list.length - 1][0];
    let pick = list[0], note = '';
    for (const g of list) if (g[0] <= e) pick = g;
    if (e > last) note = 'this run has grids up to epoch ' + last + ': showing its last';
    else if (pick[0] > e) note = 'no grid before epoch ' + pick[0] + ': showing epoch ' + pick[0];
    else if (pick[0] !== e) note = 'no grid for epoch ' + e + ': showing epoch ' + pick[0];
    if (img.getAttribute('src') !== pick[1]) img.src = pick[1];
    img.classList.toggle('stale', note !== '');
    img.nextElementSibling.textContent = note || 'epoch ' + e;
  }
  try { history.replaceState(null, '', '#epoch=' + e); } catch (err) {}
}
for (const img of grids) img.addEventListener('error', () => {
  img.classList.add('stale'); img.nextElementSibling.textContent = 'cannot load ' + img.getAttribute('src');
});
slider.addEventListener('input', () => show(+slider.value));
document.addEventListener('keydown', ev => {
  if (ev.target === slider || (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight')) return;
  ev.preventDefault(); show(+slider.value + (ev.key === 'ArrowRight' ? 1 : -1));
});
const fromHash = () => { const m = /epoch=(\\d+)/.exec(location.hash); return m ? +m[1] : +slider.max; };
window.addEventListener('hashchange', () => show(fromHash()));
show(fromHash());
"""


def _value(value: Any) -> str:
    """A setting or score as short text: numbers to 4 figures, true/false, JSON for the rest."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _score(key: str, floor: str | None, final: dict[str, Any], n_classes: int) -> str:
    """One score cell (escaped HTML): the value and, where there is one, its real-data floor."""
    value, percent = final.get(key), key.startswith("label_acc")
    if not isinstance(value, float):
        return DASH
    if key == "classes_covered":
        return f"{value:.0f}/{n_classes}"
    text = f"{value:.1%}" if percent else _value(value)
    if floor and isinstance(final.get(floor), float):
        text += f' <span class="floor">real {f"{final[floor]:.1%}" if percent else _value(final[floor])}</span>'
    return text


def per_class(final: dict[str, Any]) -> tuple[str, list[tuple[str, float]]]:
    """The first kind of per-class column a final metrics row holds: its title and (class, value) pairs."""
    for title, pattern in PER_CLASS:
        pairs = [(m[1], v) for k, v in final.items() if (m := pattern.fullmatch(k)) and isinstance(v, float)]
        if pairs:
            return title, pairs
    return "", []


def _bars(title: str, pairs: list[tuple[str, float]]) -> str:
    """Per-class values as a small bar chart under their title (escaped HTML)."""
    top = max([v for _, v in pairs] + [1e-9])
    bars = "".join(
        f'<span>{html.escape(k)}</span><i style="width:{100 * max(v, 0) / top:.0f}%"></i><b>{v:.1%}</b>'
        for k, v in pairs
    )
    return f'<div class="floor">{title}</div><div class="cls">{bars}</div>' if pairs else DASH


def _row(title: str, cells: list[str], cls: str = "") -> str:
    """One table row: a heading and one already-escaped cell per run."""
    return f'<tr class="{cls}"><th>{html.escape(title)}</th>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _grid(run: dict[str, Any]) -> str:
    """The slider-driven fixed-noise grid of a run, showing its last epoch until the script runs."""
    if not run["grids"]:
        return '<span class="missing">no sample grids yet</span>'
    data, last, name = html.escape(json.dumps(run["grids"])), html.escape(run["grids"][-1][1]), html.escape(run["name"])
    return f'<img class="grid" src="{last}" data-grids="{data}" alt="samples of {name}"><div class="note"></div>'


def _picture(link: str | None, name: str) -> str:
    """A run's picture, linked to itself at full size, or a note that it is missing."""
    if link is None:
        return f'<span class="missing">no {name}</span>'
    return f'<a href="{html.escape(link)}" title="full size"><img src="{html.escape(link)}" alt="{name}" loading="lazy"></a>'


def _links(run: dict[str, Any]) -> str:
    """Links to the run's folder and files, and a list of every setting."""
    links = [f'<a href="{html.escape(run["url"])}">folder</a>']
    for name, link in ((n, run["files"][n]) for n in FILES):
        links.append(f'<a href="{html.escape(link)}">{name}</a>' if link else f'<span class="missing">no {name}</span>')
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_value(v))}</td></tr>" for k, v in run["cfg"].items()
    )
    return " &middot; ".join(links) + f"<details><summary>all settings</summary><table>{rows}</table></details>"


def _settings(runs: list[dict[str, Any]]) -> list[str]:
    """Rows for the settings that differ: one per setting all runs have, one for those only some have."""
    cfgs = [r["cfg"] for r in runs]
    keys = list(dict.fromkeys(k for cfg in cfgs for k in cfg if k not in OWN_ROWS))
    shared = [k for k in keys if all(k in cfg for cfg in cfgs)]
    differ = [k for k in shared if len({json.dumps(cfg[k], sort_keys=True) for cfg in cfgs}) > 1]
    rows = [_row(k, [html.escape(_value(cfg[k])) for cfg in cfgs], "setting") for k in differ]
    only = [", ".join(f"{k}={_value(cfg[k])}" for k in keys if k in cfg and k not in shared) for cfg in cfgs]
    if len(runs) > 1 and any(only):
        rows.append(_row("settings of only some runs", [html.escape(o) or DASH for o in only], "setting"))
    if not rows:
        note = "none" if len(runs) > 1 else "one run: see all settings under files"
        rows.append(f'<tr class="setting"><th>settings that differ</th><td colspan="{len(runs)}">{note}</td></tr>')
    return rows


def render(root: Path, runs: list[dict[str, Any]]) -> str:
    """The whole page (a string of HTML) for runs as load_run returns them."""
    title, stamp = html.escape(f"Runs in {root}"), time.strftime("%Y-%m-%d %H:%M")
    head = f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style>'
    if not runs:
        return head + (
            f"</head><body><header><h1>{title}</h1></header><main><p>No runs here yet: a run is a folder holding "
            "config.json. Train one (e.g. <code>python VAE-MNIST.py</code>), then run <code>python compare.py</code>."
            f'</p><p class="sub">written {stamp}</p></main></body></html>\n'
        )
    epochs = [e for r in runs for e, _ in r["grids"]] or [1]
    low, high = min(epochs), max(epochs)
    bar = (
        f'<div><label for="epoch">epoch</label> <input type="range" id="epoch" min="{low}" max="{high}" value="{high}"'
        f'{"" if low < high else " disabled"}> <b id="shown">{high}</b> / {high} <span class="sub">(&larr; &rarr;)</span></div>'
        f'<span class="sub">{len(runs)} run(s), written {stamp} by compare.py or at the end of a training run; click a picture for full size</span>'
    )
    kinds = [per_class(r["final"]) for r in runs]
    rows = [
        _row("script", [html.escape(str(r["cfg"].get("script", "?"))) for r in runs]),
        _row("data set", [html.escape(str(r["cfg"].get("dataset", "?"))) for r in runs]),
        _row("epochs done", [html.escape(f"{r['done']} of {r['planned'] or '?'}") + r["time"] for r in runs]),
        *_settings(runs),
        _row("samples (fixed noise)", [_grid(r) for r in runs], "samples"),
        _row("scores at epoch", [str(r["scored"]) if r["scored"] else MISSING_SCORES for r in runs]),
    ]
    if any(r.get("best") for r in runs):  # checkpoints/best.pt's epoch: what generate.py samples
        rows.append(_row("best", [html.escape(f"best: {r['best']}") if r.get("best") else DASH for r in runs]))
    for name, key, floor in SCORES:
        if any(key in r["final"] for r in runs):
            cells = [
                _score(key, floor, r["final"], len(pairs) or 10) for r, (_, pairs) in zip(runs, kinds, strict=True)
            ]
            rows.append(_row(name, cells, "score"))
    if any(pairs for _, pairs in kinds):
        rows.append(_row("per class", [_bars(title, pairs) for title, pairs in kinds], "classes"))
    rows += [_row(label, [_picture(r["files"][name], name) for r in runs]) for label, name in PICTURES]
    rows.append(_row("files", [_links(r) for r in runs]))
    notes = ["<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in r["notes"]) + "</ul>" for r in runs]
    rows.append(_row("missing", [n if n != "<ul></ul>" else "nothing" for n in notes], "notes"))
    heads = "".join(f'<td><a href="{html.escape(r["url"])}">{html.escape(r["name"])}</a></td>' for r in runs)
    table = f"<table><thead><tr><th></th>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    body = f"<header><h1>{title}</h1>{bar}</header><main>{table}</main><script>{JS}</script>"
    return head + f"</head><body>{body}</body></html>\n"


def write_index(outputs_root: Path, runs: list[Path] | None = None) -> Path | None:
    """Write outputs_root/index.html for runs (default: every run in it); on any failure print one line, return None."""
    root = Path(outputs_root)
    tmp = root / f".{PAGE}.{os.getpid()}.tmp"  # written whole, then renamed: a reload never sees half a page
    try:
        if not root.is_dir():
            print(f"page: {root} is not a folder; no {PAGE} written")
            return None
        loaded = []
        for run in find_runs(root) if runs is None else [Path(r) for r in runs]:
            try:
                loaded.append(load_run(run, root))
            except Exception as exc:  # one odd folder must not cost the page of the others
                print(f"page: left out {run} ({type(exc).__name__}: {exc})")
        tmp.write_text(render(root, loaded), encoding="utf-8")
        os.replace(tmp, root / PAGE)
        return root / PAGE
    except Exception as exc:  # the page is a convenience: it must never fail a training run
        print(f"page: cannot write {root / PAGE} ({type(exc).__name__}: {exc})")
        tmp.unlink(missing_ok=True)
        return None
