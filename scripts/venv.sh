# Sourced by scripts/test and scripts/docs: the venv that is exactly requirements/lock.txt.
#   venv_create VENV        make VENV (if missing) and install the locked installers into it
#   venv_sync VENV LOCK     make VENV exactly LOCK (uv pip sync: nothing more, nothing older)

venv_create() {
    if [ ! -x "$1/bin/python" ]; then
        python3 -m venv "$1"
    fi
    # The installers first, at their locked versions; then uv resolves or syncs the rest.
    "$1/bin/python" -m pip install --quiet --disable-pip-version-check \
        $(grep -E '^(pip|setuptools|wheel|uv)==' requirements/lock.txt)
}

venv_sync() {
    # Editable builds use the locked setuptools in the venv, not a fresh unpinned one.
    "$1/bin/uv" pip sync --quiet --python "$1/bin/python" --no-build-isolation "$2"
}
