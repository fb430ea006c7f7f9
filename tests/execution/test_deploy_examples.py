"""The deployment examples in deploy/ are consistent with the CLI: dask-jobqueue turns the HPC
config into Slurm and LSF job scripts that start single-threaded Dask workers, and the Kubernetes
manifests parse and run commands that exist."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from pumice.cli.main import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize("kind,directive", [("slurm", "#SBATCH"), ("lsf", "#BSUB")])
def test_hpc_config_makes_job_scripts_that_start_dask_workers(kind, directive, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    import dask.config

    config = yaml.safe_load((DEPLOY / "hpc" / "jobqueue.yaml").read_text())
    spec = importlib.util.spec_from_file_location("start_cluster", DEPLOY / "hpc" / "start_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with dask.config.set(dask.config.merge(dask.config.config, config)):  # as if it were ~/.config/dask/jobqueue.yaml
        cluster = module.make_cluster(kind)
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert directive in script and "distributed.cli.dask_worker" in script and "--nthreads 1" in script
    assert "--memory-limit 4.00GiB" in script


def test_kubernetes_manifests_run_real_commands():
    parser = build_parser()
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "workers.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = parser.parse_args(args)  # the worker command line is one the CLI accepts
    assert parsed.verb == "worker" and parsed.url.startswith("sqs://") and parsed.lease_seconds == 900
    dask_cluster = yaml.safe_load((DEPLOY / "kubernetes" / "dask-cluster.yaml").read_text())
    worker = dask_cluster["spec"]["worker"]["spec"]["containers"][0]["command"]
    assert worker[:2] == ["dask", "worker"] and "--nthreads" in worker
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["pumice"]' in dockerfile and "pip install ." in dockerfile
