"""Every notebook in nbs/ as one pytest test, run by `nbdev_test` with the flags of settings.ini (NBDEV_FLAGS adds flags,
e.g. slow), called in the test's own process: torch and fastai are imported once per worker, not once per notebook
(about 5 s each)"""
import os, tempfile
from unittest import mock
import pytest
from conftest import ROOT

NOTEBOOKS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook(nb, tmp_path, monkeypatch, capfd):
    from nbdev.test import nbdev_test
    monkeypatch.chdir(ROOT)  # where nbdev finds settings.ini
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # its own temp folder (tempfile read TMPDIR once, at the start)
    with mock.patch.dict(os.environ, TMPDIR=str(tmp_path)):  # what the notebook sets in the environment (nbdev's IN_TEST too) ends with it
        try: nbdev_test(path=str(ROOT/'nbs'/nb), n_workers=0, flags=os.environ.get('NBDEV_FLAGS', ''))
        except SystemExit: pytest.fail(f"nbdev_test failed on {nb}:\n{capfd.readouterr().err[-8000:]}")
    left = sorted(p.name for p in tmp_path.glob('tmp*'))  # tempfile's folders (torch keeps its own caches there too)
    assert not left, f"{nb} left scratch files in its temp folder (remove them in its last cell): {left}"
