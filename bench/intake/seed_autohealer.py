"""The seed's AutoHealer, reconstructed from its README for benchmarking:
FastAPI, POST /anomaly {"name", "details"}, looked up in reflex_map.yml,
every action logged at CRITICAL. Run: uvicorn seed_autohealer:app --port 8001

The seed matches exact names only (a dict lookup). For the distinct-names
benchmark (bench/intake/distinct.sh) it is given the one addition it needs
to match them, the fairest way: a reflex map entry whose name holds a glob
character (`*?[`) is compiled once, with fnmatch (`*` matches anything,
dots included, like healer's globset) and tried in file order after the
exact lookup misses. Exact names cost what they did. REFLEX_MAP names
another map file (default reflex_map.yml next to this one).
"""
import fnmatch
import logging
import os
import re

import yaml
from fastapi import FastAPI
from pydantic import BaseModel

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("AutoHealer")

_map_file = os.environ.get("REFLEX_MAP") or os.path.join(os.path.dirname(__file__), "reflex_map.yml")
with open(_map_file) as f:
    _anomalies = yaml.safe_load(f)["anomalies"]
REFLEX_MAP = {a["name"]: a for a in _anomalies if not any(c in a["name"] for c in "*?[")}
REFLEX_GLOBS = [(re.compile(fnmatch.translate(a["name"])), a)
                for a in _anomalies if any(c in a["name"] for c in "*?[")]


def reflex_for(name):
    reflex = REFLEX_MAP.get(name)
    if reflex is None:
        for pattern, candidate in REFLEX_GLOBS:
            if pattern.match(name):
                return candidate
    return reflex

app = FastAPI()


class Anomaly(BaseModel):
    name: str
    details: dict = {}


@app.post("/anomaly")
async def anomaly(report: Anomaly):
    reflex = reflex_for(report.name)
    if reflex is None:
        logger.warning("no reflex for %s", report.name)
        return {"status": "no_reflex", "anomaly": report.name}
    logger.critical({
        "event": "auto_healer_action",
        "anomaly": report.name,
        "details": report.details,
        "workflow": reflex["workflow"],
        "params": reflex.get("params", {}),
    })
    return {"status": "workflow_triggered", "workflow": reflex["workflow"]}
