"""A griffe extension for the API reference: a docstring's `Example:` section is read as `Examples:`.

The package's docstrings follow Keras' habit of a singular `Example:` heading; griffe's Google-style
parser knows only `Examples:`, and would render the doctest lines as Markdown (where `x[0][1]` reads
as a reference link). Nothing is imported: the docstrings are rewritten as griffe reads them.
"""

import re

import griffe

HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.M)


class SingularExampleHeading(griffe.Extension):
    """Rewrite `Example:` headings to `Examples:` in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = HEADING.sub(r"\1Examples:", obj.docstring.value)
