"""User-facing errors: one line that names the bad file or parameter and the fix."""

import argparse
from typing import NoReturn


class UserError(Exception):
    """A problem the user can fix (bad parameter, missing or corrupt file).

    Stage entry points print it as a single line instead of a traceback.
    """


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``error: `` line, as every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
