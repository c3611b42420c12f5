"""The one exception a user's mistake raises.

Example:
    >>> from keras_team.errors import KerasTeamError
    >>> try:
    ...     raise KerasTeamError("keep", 7, "one of 1, 2, 3")
    ... except KerasTeamError as e:
    ...     print(e)
    keep=7 is not valid: expected one of 1, 2, 3
"""


class KerasTeamError(ValueError):
    """A user error: names the field, the value given and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not valid: expected {allowed}")
