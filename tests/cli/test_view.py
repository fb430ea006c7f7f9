import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_view_serves_layers_and_stops_cleanly(tmp_path, cli, sig):
    np.save(tmp_path / "a.npy", np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6))
    assert cli("ingest", tmp_path / "a.npy", tmp_path / "layer", "--resolution", "1,1,1")[0] == 0
    proc = subprocess.Popen([sys.executable, "-m", "pumice.cli.main", "view", str(tmp_path / "layer")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("Neuroglancer: http://127.0.0.1:"), lines
        data_url = lines[1].split()[-1]
        assert data_url.startswith("http://127.0.0.1:") and data_url.endswith("/layer")
        with urllib.request.urlopen(data_url + "/info", timeout=10) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert b'"data_type": "uint8"' in r.read()
        with urllib.request.urlopen(lines[0].split()[1], timeout=10) as r:
            assert r.status == 200  # the bundled Neuroglancer client
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err
    finally:
        proc.kill()


def test_view_of_a_missing_layer_is_a_clear_error(tmp_path, cli):
    code, _, err = cli("view", tmp_path / "nope")
    assert code == 2 and "no Precomputed layer" in err and err.count("\n") == 1
