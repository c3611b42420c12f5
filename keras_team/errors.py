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


class ExportFailed(KerasTeamError):
    """An export that failed after the model was finished: what was trained and verified before it is kept.

    `report` is the run's report when a whole run ended so (`keras-team run`
    exits 3, not 2, and its table is still printed).

    Example:
        >>> print(ExportFailed("artefact tflite-int8", "top1_agreement=0.93 < 0.95", "within its tolerance"))
        artefact tflite-int8='top1_agreement=0.93 < 0.95' is not valid: expected within its tolerance
    """

    def __init__(self, field: str, value: object, allowed: str, report: dict | None = None):
        super().__init__(field, value, allowed)
        self.report = report
