"Every notebook in nbs/ as one pytest test, run by `nbdev_test` with the flags of settings.ini (NBDEV_FLAGS adds flags, e.g. slow)"
import os, subprocess
import pytest
from conftest import ROOT, BIN

NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook(nb, tmp_path):
    cmd = [str(BIN/'nbdev_test'), '--path', f'nbs/{nb}', '--n_workers', '0', '--flags', os.environ.get('NBDEV_FLAGS', '')]
    env = {**os.environ, 'TMPDIR': str(tmp_path)}  # its own temp folder; pytest keeps it only when the test fails
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"nbdev_test failed on {nb}:\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}"
    left = sorted(p.name for p in tmp_path.glob('tmp*'))  # tempfile's folders (torch keeps its own caches there too)
    assert not left, f"{nb} left scratch files in its temp folder (remove them in its last cell): {left}"
