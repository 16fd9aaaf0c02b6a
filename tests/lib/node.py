"""npm packages the tests use, installed from the committed lock files."""
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ensure_node_modules(rel_dir):
    """Run `npm ci` in ROOT/rel_dir when its node_modules is missing; returns the dir."""
    d = os.path.join(ROOT, rel_dir)
    if not shutil.which("node") or not shutil.which("npm"):
        raise RuntimeError("node and npm are needed (scripts/install-deps.sh test installs them)")
    if not os.path.isdir(os.path.join(d, "node_modules")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=d, check=True,
                       stdout=subprocess.DEVNULL)
    return d
