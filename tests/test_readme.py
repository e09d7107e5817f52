"The README is the rendering of nbs/index.ipynb, and its quick-start commands are the ones CI runs"
import re, shlex, subprocess
from conftest import ROOT, BIN

README = (ROOT/'README.md').read_text()

def test_readme_is_rendered_from_index():
    cmd = re.search(r'`(jupyter nbconvert [^`]+?) > README\.md`', README).group(1)  # the command the README gives
    r = subprocess.run([str(BIN/'jupyter'), *shlex.split(cmd)[1:]], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == README, f"README.md is out of date: rebuild it with `{cmd} > README.md`"

def test_ci_runs_the_readme_commands():
    quick = README.split('## Quick start')[1].split('\n## ')[0]
    install, tests = re.findall(r'```sh\n(.+?)\n```', quick)
    ci = (ROOT/'.ci'/'run').read_text().splitlines()
    assert tests in ci, f"the README's test command {tests!r} is not a line of .ci/run"
    pip = re.search(r'\.venv/bin/pip install [^&]+', install).group(0).strip()
    assert any(l.replace(' -q', '').startswith(pip) for l in ci), f"the README installs with {pip!r}, .ci/run does not"
