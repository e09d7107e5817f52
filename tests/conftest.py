import sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent/'shared'/'data'
BIN = Path(sys.executable).parent

def shared(name):
    "Path of a shared data set, or skip the test when ../shared is absent"
    p = SHARED/name
    if not p.is_dir(): pytest.skip(f"{p} not found (../shared is absent)")
    return p

def command(name):
    "Path of one of the package's console scripts in this environment"
    p = BIN/name
    if not p.exists(): pytest.fail(f"{p} missing: install the package with pip install -e .")
    return str(p)

@pytest.fixture(autouse=True, scope='session')
def cache_home(tmp_path_factory):
    "What the package keeps in the user's cache (the note that a model.pkl is code, shown once) goes to a scratch folder"
    import os
    os.environ['XDG_CACHE_HOME'] = str(tmp_path_factory.mktemp('cache'))
