"""Every notebook in nbs/ as one pytest test, run as `nbdev_test` runs it (nbdev's `test_nb`, the flags of settings.ini;
NBDEV_FLAGS adds flags, e.g. slow), in the test's own process: torch and fastai are imported once per worker, not once
per notebook (about 5 s each)"""
import os, tempfile
import pytest
from conftest import ROOT

NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook(nb, tmp_path, monkeypatch, capfd):
    from nbdev.config import get_config
    from nbdev.test import test_nb
    monkeypatch.setenv('TMPDIR', str(tmp_path))  # its own temp folder; pytest keeps it only when the test fails
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # tempfile read TMPDIR once, when this process started
    monkeypatch.chdir(ROOT/'nbs')  # as nbdev_test does
    env = dict(os.environ)
    try: ok, _ = test_nb(ROOT/'nbs'/nb, skip_flags=get_config().tst_flags.split(), force_flags=os.environ.get('NBDEV_FLAGS', '').split(),
                         basepath=get_config().config_path)
    finally: os.environ.clear(); os.environ.update(env)  # what the notebook set (and nbdev's IN_TEST) ends with it
    assert ok, f"nbdev_test failed on {nb}:\n{capfd.readouterr().err[-8000:]}"
    left = sorted(p.name for p in tmp_path.glob('tmp*'))  # tempfile's folders (torch keeps its own caches there too)
    assert not left, f"{nb} left scratch files in its temp folder (remove them in its last cell): {left}"
