"""systemd timers for the dsg roles' periodic jobs (role dsg_timers): cron schedules as
OnCalendar= expressions, and argv as ExecStart= words."""

from __future__ import annotations

import re
from typing import Any

NICKNAMES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
DOW_NUMBERS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
DOW_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
# field: (low, high) as cron allows
RANGES = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}


class ScheduleError(ValueError):
    pass


def _names(text: str, names: dict[str, int]) -> str:
    return re.sub(r"[a-z]{3}", lambda m: str(names[m.group(0)]) if m.group(0) in names
                  else m.group(0), text.lower())  # fmt: skip


def _expand(part: str, low: int, high: int) -> list[int]:
    """One comma-separated element of a cron field as the values it matches."""
    m = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
    if not m:
        raise ScheduleError(f"not a cron field element: {part!r}")
    base, step = m.group(1), int(m.group(2) or 1)
    if step < 1:
        raise ScheduleError(f"step must be at least 1: {part!r}")
    if base == "*":
        start, end = low, high
    elif "-" in base:
        start, end = (int(x) for x in base.split("-"))
    else:
        start = int(base)
        end = high if m.group(2) else start
    if not (low <= start <= end <= high):
        raise ScheduleError(f"{part!r} is outside {low}-{high}")
    return list(range(start, end + 1, step))


def _field(text: str, kind: str) -> str:
    """A cron field as an OnCalendar component ('*', '00/5', '1,15', '8..14')."""
    low, high = RANGES[kind]
    if text == "*":
        return "*"
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\*/(\d+)", part)
        if m and kind in ("minute", "hour"):
            _expand(part, low, high)  # validates the step
            out.append(f"00/{int(m.group(1))}")
            continue
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            _expand(part, low, high)  # validates the bounds
            out.append(f"{int(m.group(1)):02d}..{int(m.group(2)):02d}")
            continue
        out.append(",".join(f"{v:02d}" for v in _expand(part, low, high)))
    return ",".join(out)


def _dow(text: str) -> str:
    days: list[int] = []
    for part in text.split(","):
        days.extend(_expand(part, 0, 7))
    names = []
    for d in days:
        name = DOW_NAMES[d]
        if name not in names:
            names.append(name)
    return ",".join(names)


def dsg_timers_oncalendar(schedule: str) -> list[str]:
    """A cron schedule (five fields, or @hourly/@daily/...) as OnCalendar= values.

    cron runs a job whose day-of-month and day-of-week are both restricted when either
    matches; systemd requires both, so such a schedule gives two expressions (a timer with
    several OnCalendar= lines elapses at each)."""
    text = NICKNAMES.get(schedule.strip(), schedule.strip())
    if text.startswith("@"):
        raise ScheduleError(f"{schedule!r}: no timer equivalent (use five cron fields)")
    fields = text.split()
    if len(fields) != 5:
        raise ScheduleError(f"{schedule!r} is not five cron fields")
    minute, hour, dom, month, dow = fields
    month = _names(month, MONTHS)
    dow = _names(dow, DOW_NUMBERS)
    time = f"{_field(hour, 'hour')}:{_field(minute, 'minute')}:00"
    month_c = _field(month, "month")
    if dow == "*":
        return [f"*-{month_c}-{_field(dom, 'dom')} {time}"]
    if dom == "*":
        return [f"{_dow(dow)} *-{month_c}-* {time}"]
    return [f"*-{month_c}-{_field(dom, 'dom')} {time}", f"{_dow(dow)} *-{month_c}-* {time}"]


_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def dsg_timers_exec(argv: list[Any]) -> str:
    """argv as the words of a systemd Exec*= line: quoted where needed, % and $ doubled
    (systemd expands specifiers and variables itself)."""
    words = []
    for arg in argv:
        word = str(arg).replace("%", "%%").replace("$", "$$")
        if not word or not _PLAIN.fullmatch(word):
            word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(word)
    return " ".join(words)


def dsg_timers_unit_name(prefix: str, name: str) -> str:
    """<prefix>-<job name>, with anything but [A-Za-z0-9_.-] turned into '-'."""
    return f"{prefix}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', str(name)).strip('-')}"


def dsg_timers_unit_files(jobs: list[dict[str, Any]], prefix: str, unit_dir: str) -> list[str]:
    """The service and timer files of these jobs."""
    out = []
    for job in jobs:
        unit = f"{unit_dir.rstrip('/')}/{dsg_timers_unit_name(prefix, job['name'])}"
        out += [f"{unit}.service", f"{unit}.timer"]
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "dsg_timers_oncalendar": dsg_timers_oncalendar,
            "dsg_timers_exec": dsg_timers_exec,
            "dsg_timers_unit_name": dsg_timers_unit_name,
            "dsg_timers_unit_files": dsg_timers_unit_files,
        }
