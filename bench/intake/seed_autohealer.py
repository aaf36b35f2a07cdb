"""The seed's AutoHealer, reconstructed from its README for benchmarking:
FastAPI, POST /anomaly {"name", "details"}, looked up in reflex_map.yml,
every action logged at CRITICAL. Run: uvicorn seed_autohealer:app --port 8001
"""
import logging
import os

import yaml
from fastapi import FastAPI
from pydantic import BaseModel

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger("AutoHealer")

with open(os.path.join(os.path.dirname(__file__), "reflex_map.yml")) as f:
    REFLEX_MAP = {a["name"]: a for a in yaml.safe_load(f)["anomalies"]}

app = FastAPI()


class Anomaly(BaseModel):
    name: str
    details: dict = {}


@app.post("/anomaly")
async def anomaly(report: Anomaly):
    reflex = REFLEX_MAP.get(report.name)
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
