"""Chains: a job's finished run starts other jobs (on success, on failure, or always),
optionally passing its result as a keyword argument.

Writes (the links of a job, checked for cycles before anything is saved) and the start of
the next runs, which the run-finished receiver (:mod:`scheduling.receivers`) calls once
per finished run, after its last attempt and after its record has committed. A started
run goes through :func:`scheduling.services.job_run_now`: trigger ``chain``, its
``parent`` the run that started it, its logical time that run's scheduled time.

What starts what:

- a success starts the links ``success`` and ``always``;
- a failure (failed, timed out, lost), once no retry follows, starts ``failure`` and
  ``always``;
- a cancelled or terminated run starts nothing: an operator stopped it, which is neither
  its success nor its failure (as for alerts and pause on failure); nor does a fire time
  that did not run (missed, skipped, excluded);
- a paused next job is not started (logged): pausing a job means it does not run.

The result passed is the upstream run's stored result (the JSON text the run's record
keeps, secrets masked) read back as JSON; a result too big for the record (cut short) or
not JSON (stored as its ``repr``) is passed as that stored text, a string.
"""

import dataclasses
import json
import logging
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from scheduling import audit, signals
from scheduling.models import (
    FAILED_STATUSES,
    ChainCondition,
    ExecutionStatus,
    Job,
    JobExecution,
    JobLink,
    kwarg_name_validator,
)

logger = logging.getLogger(__name__)

#: The conditions a run's outcome meets.
_MET = {
    "success": {ChainCondition.SUCCESS, ChainCondition.ALWAYS},
    "failure": {ChainCondition.FAILURE, ChainCondition.ALWAYS},
}


@dataclasses.dataclass(frozen=True)
class LinkSpec:
    """One link of a job as given (command line, import, admin): the next job's name,
    the condition and the keyword argument the result goes to ("" for none)."""

    job: str
    condition: str = ChainCondition.SUCCESS
    pass_result_as: str = ""

    def as_entry(self) -> dict[str, str]:
        """The link as ``jobs show --json`` and the config file write it."""
        return {"job": self.job, "on": str(self.condition), "as": self.pass_result_as}


def link_parse(text: str) -> LinkSpec:
    """``NAME[:success|failure|always][:as=KWARG]`` (``--then``) as a :class:`LinkSpec`;
    ``ValidationError`` on ``then`` naming what is wrong."""
    name, *parts = text.split(":")
    condition, pass_as = ChainCondition.SUCCESS, ""
    for part in parts:
        if part.startswith("as="):
            pass_as = part[3:]
        elif part in ChainCondition.values:
            condition = part
        else:
            raise ValidationError(
                {
                    "then": _(
                        "%(text)r: %(part)r is neither success, failure, always nor as=KWARG."
                    )
                    % {"text": text, "part": part}
                }
            )
    return LinkSpec(job=name.strip(), condition=condition, pass_result_as=pass_as)


def entry_parse(entry: Any, where: str) -> tuple[LinkSpec | None, str | None]:
    """One link of a config file (``{"job": ..., "on": ..., "as": ...}``) and the problem
    with it (``None`` when there is none)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("job"), str):
        return None, f'{where}: a link must be an object with a "job" name'
    unknown = set(entry) - {"job", "on", "as"}
    if unknown:
        return None, f"{where}: unknown keys {sorted(unknown)}"
    spec = LinkSpec(
        job=entry["job"],
        condition=entry.get("on", ChainCondition.SUCCESS),
        pass_result_as=entry.get("as", ""),
    )
    problem = spec_problem(spec)
    return (None, f"{where}: {problem}") if problem else (spec, None)


def entries_parse(entries: list[Any], where: str) -> tuple[list[LinkSpec], list[str]]:
    """The links of a list of entries (:func:`entry_parse`, the ``index``-th named
    ``where[index]``) and the problems with them."""
    links, problems = [], []
    for index, entry in enumerate(entries):
        spec, problem = entry_parse(entry, f"{where}[{index}]")
        if problem:
            problems.append(problem)
        else:
            links.append(spec)
    return links, problems


def spec_problem(spec: LinkSpec) -> str | None:
    """What is wrong with one link on its own (condition, keyword name), or ``None``."""
    if not isinstance(spec.condition, str) or spec.condition not in ChainCondition.values:
        return _("%(job)s: the condition must be success, failure or always, not %(value)r.") % {
            "job": spec.job,
            "value": spec.condition,
        }
    if not isinstance(spec.pass_result_as, str):
        return _("%(job)s: the keyword argument must be a name.") % {"job": spec.job}
    if spec.pass_result_as:
        try:
            kwarg_name_validator(spec.pass_result_as)
        except ValidationError as exc:
            return f"{spec.job}: {spec.pass_result_as!r}: {' '.join(exc.messages)}"
    return None


def cycle_find(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A cycle through ``start`` in ``graph`` (job name -> names of the jobs it starts),
    as the path ``[start, ..., start]``; ``None`` when there is none."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def cycle_message(cycle: list[str]) -> str:
    """The error of a refused cycle, naming it: ``a -> b -> c -> a``."""
    return _("These links make a cycle: %(cycle)s.") % {"cycle": " -> ".join(cycle)}


def stored_graph(exclude: Iterable[str] = ()) -> dict[str, set[str]]:
    """Every saved link as ``{upstream name: {downstream names}}``, leaving out the links
    of the jobs named in ``exclude`` (those about to be replaced)."""
    graph: dict[str, set[str]] = {}
    rows = JobLink.objects.exclude(upstream__name__in=list(exclude)).values_list(
        "upstream__name", "downstream__name"
    )
    for upstream, downstream in rows:
        graph.setdefault(upstream, set()).add(downstream)
    return graph


def links_problems(
    links: dict[str, list[LinkSpec]], known: Iterable[str], graph: dict[str, set[str]]
) -> list[str]:
    """Every problem of giving each job named in ``links`` those links (replacing its
    own) on top of ``graph``: a bad condition or keyword name, a next job not in
    ``known``, a job named twice, a cycle (named). Empty: they can be saved."""
    known = set(known)
    problems = []
    graph = {name: set(targets) for name, targets in graph.items()}
    for upstream, specs in links.items():
        names = [spec.job for spec in specs]
        for spec in specs:
            if problem := spec_problem(spec):
                problems.append(problem)
            elif spec.job not in known:
                problems.append(
                    _("%(job)s: no job named %(name)r to start.")
                    % {"job": upstream, "name": spec.job}
                )
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            problems.append(
                _("%(job)s: %(names)s named more than once.")
                % {"job": upstream, "names": ", ".join(twice)}
            )
        graph[upstream] = set(names)
    for upstream in sorted(links):
        if cycle := cycle_find(graph, upstream):
            problems.append(cycle_message(cycle))
            break  # one cycle named is enough to fix; the next save finds any other
    return problems


def job_links(job: Job) -> list[LinkSpec]:
    """The links of ``job``, by next job's name."""
    return [
        LinkSpec(link.downstream.name, link.condition, link.pass_result_as)
        for link in job.links_out.select_related("downstream").order_by("downstream__name")
    ]


@transaction.atomic
def job_set_links(*, job: Job, links: Iterable[LinkSpec]) -> Job:
    """Make ``links`` the links of ``job`` (the jobs its finished runs start), replacing
    its own; ``ValidationError`` on ``then`` listing every problem, a cycle named
    (``a -> b -> c -> a``), and nothing saved. The change is in the job's audit trail.

    The job rows involved are locked (in id order) first, so two saves at once that would
    together close a cycle run one after the other and the second sees the first."""
    links = list(links)
    names = {spec.job for spec in links}
    locked = Q(pk=job.pk) | Q(name__in=list(names))
    list(Job.objects.select_for_update().filter(locked).order_by("pk").values_list("pk", flat=True))
    found = dict(Job.objects.filter(name__in=names).values_list("name", "pk"))
    problems = links_problems({job.name: links}, found, stored_graph(exclude=[job.name]))
    if problems:
        raise ValidationError({"then": problems})
    before = [spec.as_entry() for spec in job_links(job)]
    after = [spec.as_entry() for spec in sorted(links, key=lambda spec: spec.job)]
    if before == after:
        return job
    JobLink.objects.filter(upstream=job).delete()
    Job.objects.filter(pk=job.pk).update(has_links=bool(links))
    job.has_links = bool(links)
    JobLink.objects.bulk_create(
        JobLink(
            upstream=job,
            downstream_id=found[spec.job],
            condition=spec.condition,
            pass_result_as=spec.pass_result_as,
        )
        for spec in links
    )
    context = audit.current()
    signals.job_changed.send_robust(
        sender=Job,
        job=job,
        source=context.source,
        actor=context.actor,
        changes={"then": [before, after]},
    )
    return job


def outcome_of(execution: JobExecution) -> str | None:
    """``"success"``, ``"failure"`` or ``None`` (an outcome that starts no chain)."""
    if execution.status == ExecutionStatus.SUCCESS:
        return "success"
    if execution.status in FAILED_STATUSES:
        return "failure"
    return None


def result_value(execution: JobExecution) -> Any:
    """The result a chain passes on: the stored result read as JSON, else (cut short, or
    not JSON) the stored text itself; ``None`` when nothing was stored."""
    if not execution.result:
        return None
    try:
        return json.loads(execution.result)
    except ValueError:
        return execution.result


def chain_start(*, execution: JobExecution, retrying: bool = False) -> list[str]:
    """Start the next jobs of ``execution``'s job whose condition its outcome meets
    (none while a retry follows); return the Celery task ids sent. A next job that
    cannot start (paused, its task no longer registered) is logged and the others
    still start."""
    from scheduling.services import job_run_now

    outcome = None if retrying or execution.job_id is None else outcome_of(execution)
    if outcome is None or not execution.job.has_links:
        return []  # no query for a job without links (the per-run cost stays as it was)
    links = list(
        JobLink.objects.filter(upstream_id=execution.job_id, condition__in=_MET[outcome])
        .select_related("downstream")
        .order_by("downstream__name")
    )
    sent = []
    for link in links:
        downstream = link.downstream
        if not downstream.enabled:
            logger.warning(
                "Chain %s -> %s: %s is paused, not started (run %s)",
                execution.job_name,
                downstream.name,
                downstream.name,
                execution.pk,
            )
            continue
        kwargs = {link.pass_result_as: result_value(execution)} if link.pass_result_as else None
        try:
            with transaction.atomic():
                sent.append(
                    job_run_now(
                        job=downstream,
                        kwargs=kwargs,
                        logical_at=execution.scheduled_at,
                        started_by=execution,
                    )
                )
        except Exception:
            logger.exception(
                "Chain %s -> %s: could not start it (run %s)",
                execution.job_name,
                downstream.name,
                execution.pk,
            )
    return sent
