"""Write long_documents.jsonl: the long texts behind the load test's `long_context` requests.

Why a script: the load generator cuts a prompt of a drawn token length out of a document
without loading a tokenizer, so every line is stored with its Qwen token count (of the line
plus its newline). The project writes its own data rather than downloading it, and a fixed
seed makes the file identical on every run, so load-test results stay comparable.

Four documents of different kinds (an incident log, a support ticket thread, meeting minutes,
release notes) are put together block by block (an incident, a message, a meeting, a release)
from the text below, until each holds TARGET_TOKENS tokens. Run from the repository root:

    .venv/bin/python loadtest/data/generate_documents.py
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from transformers import AutoTokenizer

from serve_app.devmodel import tokenizer_files_dir

SEED = 20250314
TARGET_TOKENS = 9000  # a document stops at the first block boundary past this
MIN_TOKENS = 8000  # the least a document may hold: the load test draws excerpts of up to 6000
OUT = Path(__file__).parent / "long_documents.jsonl"

Block = list[str]
PEOPLE = [
    "Priya Raman",
    "Tomas Lindqvist",
    "Aisha Bello",
    "Marco Conti",
    "Yuki Tanaka",
    "Grace O'Neill",
    "Daniel Okafor",
    "Lena Hoffmann",
    "Samir Haddad",
    "Chloe Martin",
]


def sections(text: str, size: int = 0) -> list[tuple[list[str], list[str]]]:
    """The `## a | b` headings of `text`, split on " | ", each with the lines under it (`size`
    of them, if given)."""
    parts = []
    for part in text.strip().removeprefix("## ").split("\n## "):
        heading, *lines = part.splitlines()
        assert not size or len(lines) == size, heading
        parts.append((heading.split(" | "), lines))
    return parts


def first(name: str) -> str:
    return name.split()[0]


# --- 1. incident log --------------------------------------------------------------------------

# Under "## root service | its caller": the change that set it off, the root's error, the
# on-call engineer's wrong first guess, the fix, the root cause.
INCIDENTS = """
## orders-db | checkout-api
deploy checkout-api v4.{n} raised db pool size from 20 to 60 per pod
FATAL: remaining connection slots are reserved for non-replication superuser connections
a slow query in the nightly report job
rolled back checkout-api to the previous release
connection pool exhaustion on orders-db after the pool size change in checkout-api
## auth-svc | checkout-api
certificate rotation job skipped for internal CA bundle (job exit code 1)
tls: failed to verify certificate: x509: certificate has expired or is not yet valid
a network partition between availability zones
renewed and reloaded the mTLS certificate
an expired internal mTLS certificate on auth-svc after a failed rotation job
## redis-cache | search-api
search-api v2.{n} enabled caching of full result pages
OOM command not allowed when used memory > 'maxmemory'
a traffic spike from a crawler
disabled full-page caching with a feature flag and flushed the largest keys
redis-cache reaching maxmemory after search-api started caching full result pages
## inventory-svc | checkout-api
config push cfg-{n} changed warehouse_routing to an empty list
java.lang.IllegalStateException: no warehouse route for region eu-fra-1
a bad deploy of inventory-svc
reverted config push and restarted inventory-svc pods
a configuration push that emptied the warehouse routing table of inventory-svc
## notification-worker | payments-gateway
consumer group rebalance after node drain on worker pool b
consumer stuck: partition 7 lag {lag} messages, no commit for 900 s
the email provider rate-limiting us
restarted the stuck consumer and replayed partition 7
a notification-worker consumer that hung after a rebalance and stopped committing offsets
## edge-lb | checkout-api
DNS change dns-{n} moved api.shop.example to the new load balancer pool
health check failed: 0/4 backends healthy in pool eu-fra-1-new
a DDoS attack on the storefront
pointed the DNS record back to the old pool
a DNS change that sent traffic to a load balancer pool with no healthy backends
"""

SERVICES = [
    "checkout-api",
    "payments-gateway",
    "inventory-svc",
    "auth-svc",
    "search-api",
    "notification-worker",
    "orders-db",
    "redis-cache",
    "edge-lb",
]
BACKGROUND = [
    "INFO autoscaler scaled {svc} from {a} to {b} replicas (cpu {cpu}%)",
    "INFO {svc} health check ok in {ms} ms",
    "INFO {svc} request stats: p50 {ms} ms, p99 {p99} ms, {rps} req/s, errors 0.0{e}%",
    "INFO deploy {svc} v{major}.{n} started by ci (canary 10%)",
    "INFO deploy {svc} v{major}.{n} promoted to 100% after canary",
    "DEBUG {svc} gc pause {gc} ms, heap {heap} MB",
]


def incident_log(rng: random.Random) -> Iterator[Block]:
    clock = datetime(2025, 3, 3, 0, 0, 0)

    def at(seconds: float) -> str:
        nonlocal clock
        clock += timedelta(seconds=seconds)
        return clock.strftime("%Y-%m-%d %H:%M:%S.") + f"{rng.randrange(1000):03d}"

    def background() -> str:
        a = rng.randint(3, 12)
        line = rng.choice(BACKGROUND).format(
            svc=rng.choice(SERVICES),
            a=a,
            b=a + rng.choice([-2, -1, 1, 2, 3]),
            cpu=rng.randint(40, 90),
            ms=rng.randint(3, 60),
            p99=rng.randint(80, 400),
            rps=rng.randint(50, 2400),
            e=rng.randint(1, 9),
            major=rng.randint(1, 5),
            n=rng.randint(10, 99),
            gc=rng.randint(4, 90),
            heap=rng.randint(300, 1900),
        )
        return f"{at(rng.uniform(20, 400))} {line}"

    incidents = sections(INCIDENTS, 5)
    for number in range(4101, 10_000):
        (root, caller), (trigger, error, guess, fix, cause) = rng.choice(incidents)
        oncall, helper = rng.sample(PEOPLE, 2)
        block = [background() for _ in range(rng.randint(4, 9))]
        changed_at = at(300)
        block.append(f"{changed_at} INFO change: {trigger.format(n=rng.randint(10, 99))}")
        for step in range(rng.randint(6, 12)):
            service = rng.choice([root, caller])
            pod = f"pod={service}-{rng.randrange(16**4):04x}-{rng.randint(1, 6)}"
            if service == root:
                line = f'ERROR {root} {pod} msg="{error.format(lag=rng.randint(2, 90) * 1000)}"'
            else:
                latency = 200 * (step + 1) + rng.randint(0, 150)
                line = (
                    f'ERROR {caller} {pod} msg="upstream {root} failed after {latency} ms'
                    f' (attempt {rng.randint(1, 3)}/3)" trace_id={rng.randrange(16**12):012x}'
                )
            block.append(f"{at(rng.uniform(5, 60))} {line}")
            if step == 2:
                rate = rng.randint(4, 40)
                block.append(
                    f"{at(30)} ALERT firing: {caller} error rate {rate}% > 2% for 5m"
                    f" (INC-{number}, sev{rng.randint(1, 3)})"
                )
                block.append(f"{at(90)} PAGE INC-{number} acknowledged by {oncall} (on-call)")
            if step == 4:
                block.append(
                    f"{at(60)} NOTE {first(oncall)}: first guess is {guess}; checking"
                    f" dashboards for {caller} and {root}."
                )
        block.append(
            f"{at(240)} NOTE {first(helper)}: that does not match, the errors start right"
            f" after the change at {changed_at[11:16]}. Looking at {root} directly."
        )
        block.append(f"{at(300)} NOTE {first(oncall)}: mitigation: {fix}.")
        block += [
            f"{at(rng.uniform(30, 90))} INFO {svc} error rate back to 0.0{rng.randint(1, 9)}%"
            for svc in (root, caller)
        ]
        block.append(f"{at(300)} ALERT resolved: INC-{number}")
        block.append(
            f"{at(600)} NOTE {first(oncall)}: INC-{number} closed. Root cause: {cause}."
            f" Postmortem owner: {helper}."
        )
        clock += timedelta(hours=rng.randint(5, 40))
        yield block


# --- 2. support ticket thread -----------------------------------------------------------------

CUSTOMER = "Dana Whitfield (Larkspur Analytics)"
AGENTS = ["Oliver Grant (Northwind Support)", "Mei Chen (Northwind Support)"]
# Under "## the team that looks into it | its expert": the customer's report, what support asks,
# the customer's answer, a workaround, what the team found, the outcome. {n} is drawn per ticket.
ISSUES = """
## Database Engineering | Rafael Souza
our read replica of pg-larkspur-prod in eu-ams-1 keeps falling behind the primary, sometimes by {n} seconds, so our dashboards show stale numbers
the times when the lag was highest and whether a large batch job was running then
the lag peaks every night between 01:00 and 02:30 UTC, when our ETL job bulk loads several million rows
point the dashboards at the primary during the ETL window, or split the bulk load into smaller transactions
the replica runs on an older storage class with lower write throughput than the primary; we can move it to the same class during a maintenance window
the replica now runs on the faster storage class, and the nightly lag stayed under five seconds all week
## Database Engineering | Rafael Souza
the daily backup of pg-larkspur-prod failed twice this week with the status 'snapshot timeout', and we are worried about our recovery point
whether any long-running transactions or schema migrations were open at backup time
a migration that builds an index concurrently ran for about {n} minutes during both failed backups
run migrations outside the backup window, which starts at 03:00 UTC; point-in-time recovery still works because the write-ahead log kept being archived
the snapshot timeout was too short for a database of this size; a fix that scales the timeout with the size is rolling out region by region
the fix reached eu-ams-1 and every backup since then has completed
## Console | Hannah Berg
several of our analysts are stuck in a login loop when they sign in with SSO; the console sends them back to the identity provider again and again
roughly when the failed sign-ins happened and which browsers were used (no passwords or tokens, please)
it happens in Safari and Firefox but not in Chrome, for {n} people since Monday
sign in from a private window after clearing the cookies of console.northwind.example
a cookie attribute change in the last console release broke the SSO callback in browsers that block third-party cookies; the fix is in review
the console fix shipped this morning and the affected analysts can sign in again
## Billing | Jonas Weber
our invoice for last month shows {n} GB of Drift egress above the free allowance, but our own metrics show far less traffic to the internet
the names of the buckets involved and whether any of them send data to another Northwind region
we replicate the bucket larkspur-exports from eu-ams-1 to us-east-1 for a customer in the United States
keep the replication running; traffic between regions is billed separately from internet egress, and I have asked billing to review the line item
the invoice labelled the cross-region replication as internet egress; the total is right but the label is wrong
billing issued a corrected invoice with the right labels and the same total
## Storage | Kwame Mensah
presigned download links for the bucket larkspur-exports return 403 Forbidden after about {n} minutes, although we set them to expire after 24 hours
how the links are signed: the SDK or command, and which credentials it uses
our export service signs them with the Python SDK, using the short-lived session credentials it gets from `nw auth` at start-up
sign the links with the access key of a service account that can only read that bucket, so they do not depend on a short session
a presigned link cannot outlive the credentials that signed it, so it expired with the session; the docs now say so and the console will warn about it
your test links signed with the service account stayed valid for the full 24 hours
## Compute | Ines Duarte
resizing our VM etl-runner-2 from nw-medium to nw-large has been stuck in the state 'resizing' for {n} minutes
whether a snapshot or a disk operation was running on the VM when the resize started
a scheduled snapshot of the boot disk started a minute before the resize
wait for the snapshot to finish, then stop and start the VM, which retries the resize
a resize waits for running snapshots, but the console did not say so; it will now show which snapshot blocks the resize
the VM came back as nw-large after the snapshot finished, and the console change is live
## Functions | Pavel Novak
our function larkspur-ingest hits the 15-minute limit whenever the uploaded CSV file is larger than about {n} MB
the function's memory setting and how it reads the file
it has 512 MB of memory and reads the whole file before parsing it
stream the file from Drift in chunks instead of reading it whole, and raise the memory to 2 GB
the 15-minute limit cannot be raised per customer; the queue-based pattern in the docs splits a file into parts that separate invocations handle
with the queue-based pattern your largest file so far took six minutes in total
"""

OPENINGS = [
    "Hello, we have a new problem: {report}.",
    "Hi team, something new came up this week: {report}.",
    "Good morning. I need help with the following: {report}.",
]
RECURRENCES = [
    "Hello again. The problem from ticket {old} seems to be back: {report}.",
    "Hi, unfortunately we are seeing the same thing as in {old} again: {report}.",
]
CLOSINGS = [
    "Confirmed on our side, {ticket} can be closed. Thank you all.",
    "Everything looks good now. Please close {ticket}, and thanks for the help.",
    "We checked it this morning and it works. {ticket} can be closed.",
]
FILLERS = [
    "Thanks for the quick reply.",
    "Sorry for the slow answer, it has been a busy week here.",
    "I have attached a screenshot to the ticket.",
    "Let me know if you need anything else.",
    "I have copied my colleague Sam Ortiz on this thread.",
    "This is becoming urgent for our team.",
    "We appreciate your patience while we look into this.",
    "I will keep this ticket open until the fix is confirmed.",
]


def support_thread(rng: random.Random) -> Iterator[Block]:
    clock = datetime(2025, 1, 13, 9, 12)
    count = 0
    issues = sections(ISSUES, 6)
    earlier: dict[int, str] = {}  # the last ticket about each issue
    while True:
        for index in rng.sample(range(len(issues)), len(issues)):
            (team, expert), lines = issues[index]
            report, ask, answer = (part.format(n=rng.randint(12, 90)) for part in lines[:3])
            workaround, finding, outcome = lines[3:]
            ticket = f"NW-{rng.randint(20000, 99999)}"
            if index in earlier:
                opening = rng.choice(RECURRENCES).format(old=earlier[index], report=report)
            else:
                opening = rng.choice(OPENINGS).format(report=report)
            earlier[index] = ticket
            agent = rng.choice(AGENTS)
            messages = [
                (CUSTOMER, [opening, "Could you look into it? We are on the Business plan."]),
                (
                    agent,
                    [
                        f"Hi Dana, thanks for reaching out. I have opened ticket {ticket}.",
                        f"To narrow it down, could you tell me {ask}?",
                    ],
                ),
                (CUSTOMER, [f"Sure. From what we can see, {answer}."]),
                (
                    agent,
                    [
                        f"Thank you, that helps. Until we know the cause, a workaround is to"
                        f" {workaround}.",
                        f"I have asked our {team} team to take a look.",
                    ],
                ),
                (
                    CUSTOMER,
                    [
                        "The workaround helps for now, but we need a permanent fix."
                        " Is there an estimate?"
                    ],
                ),
                (
                    f"{expert} (Northwind {team})",
                    [
                        f"Hello Dana, I work in {team} and have looked at {ticket}.",
                        f"What we found: {finding}.",
                        "I cannot promise a date yet, but I will post here when it is scheduled.",
                    ],
                ),
                (
                    agent,
                    [
                        f"Hi Dana, an update on {ticket}: {outcome}.",
                        "Could you confirm on your side before we close the ticket?",
                    ],
                ),
                (CUSTOMER, [rng.choice(CLOSINGS).format(ticket=ticket)]),
            ]
            for author, paragraphs in messages:
                count += 1
                clock += timedelta(hours=rng.randint(1, 30), minutes=rng.randint(0, 59))
                extra = [rng.choice(FILLERS)] if rng.random() < 0.4 else []
                yield [
                    f"--- Message {count} | {ticket} | {clock:%Y-%m-%d %H:%M} UTC |"
                    f" From: {author} ---",
                    *paragraphs,
                    *extra,
                    "",
                ]


# --- 3. meeting minutes -----------------------------------------------------------------------

# Each topic comes up in several meetings and moves on each time. A line is what {a} and {b}
# said, then " | " and the decision; {n} is drawn per meeting.
TOPICS = """
## Postgres 16 upgrade
{a} presented the upgrade plan for the remaining managed Postgres fleets. {b} asked whether Singapore could go first, since it has the fewest customers. | Upgrade ap-sin-1 first, then the other regions two weeks apart
{a} reported that the ap-sin-1 upgrade caused {n} minutes of downtime on the largest instance, more than the 10 minutes announced. {b} traced it to extensions being rebuilt during the upgrade. | Pre-build extensions before the eu-ams-1 window
{a} said eu-ams-1 went smoothly with the pre-built extensions. Two customers asked to postpone; {b} suggested letting customers pick a window within a month. | Customers may postpone their upgrade by up to 30 days
{a} reported that eu-fra-1 and us-east-1 are done and {n} instances remain on version 15 because their owners postponed. | Send a final reminder and upgrade the rest on the announced date
{a} closed the upgrade project. {b} asked for a short retrospective on the Singapore downtime before the topic is dropped. | Hold the retrospective next week, then close the topic
## On-call load
{a} reported {n} pages last week, up from about 15 a week. {b} noted that most came from the disk-usage alert that fires at 70 percent. | Raise the disk-usage threshold to 85 percent and add a trend condition
{a} said pages dropped after the change, but two real disk-full events were caught late. {b} proposed an alert on the predicted time until the disk is full. | Try a time-to-full alert with a four-hour horizon
{a} shared the first week of the time-to-full alert: no false pages and one early warning that prevented an outage in eu-fra-1. | Keep the new alert and delete the old threshold alert
{b} raised that the secondary on-call is paged for every sev3 incident, and {a} agreed that this is mostly noise. | Page the secondary only for sev1 and sev2 incidents
{a} reported a quiet week with {n} pages, all of them actionable. | No changes; review the numbers again at the end of the quarter
## Drift lifecycle rules
{a} summarised customer requests for lifecycle rules on object prefixes. {b} said the design doc still needs a decision on how rules interact with versioning. | Rules apply to current versions only in the first release
{a} presented the API for the rules; {b} asked for a dry-run mode so customers can see what a rule would delete before enabling it. | Add a dry-run flag before the public preview
{a} reported {n} customers in the public preview. One of them lost objects because a rule matched a broader prefix than intended; {b} restored them from old versions. | Show the number of matching objects before a rule is saved
{a} said the preview feedback is positive and asked about general availability. {b} wants a month without incidents first. | Go to general availability after a clean month of preview
{a} confirmed the month was clean and the documentation is ready. | Announce general availability in the next release notes
## Cost review
{a} reported compute spend {n} percent above the quarterly budget. {b} found that idle staging VMs account for most of the gap. | Shut down staging VMs outside working hours by default
{a} said the staging schedule saved about {n} thousand euros this month, but the data team complained that their overnight jobs were stopped. | Teams can tag a VM to keep it out of the schedule
{b} pointed out that snapshots older than a year now cost more than the staging VMs did. {a} will check which of them are still needed. | Delete snapshots older than a year unless an owner claims them within two weeks
{a} reported that spend is now {n} percent under budget. | Move the cost review to a monthly slot
{b} noticed that traffic between regions grew {n} percent after a customer set up cross-region replication. {a} said that traffic is billed to the customer. | No action; keep an eye on internal cross-region traffic
## Status page
{a} shared customer feedback that status page updates arrive late during incidents. {b} said the updates depend on the incident commander remembering to post them. | The incident bot reminds the commander every 30 minutes in sev1 and sev2 incidents
{a} reviewed the last incident: updates went out every 30 minutes, but {b} found the wording too technical for customers. | Write plain-language templates for the most common kinds of incident
{b} asked whether the status page should show each region separately; {a} said customers in Singapore have asked for it {n} times this quarter. | Split the status page by region
{a} demonstrated the per-region status page on staging. | Ship it next week and announce it on the blog
{a} reported {n} new subscribers to the per-region updates in the first week. {b} asked whether the RSS feed should be split by region too. | Add an RSS feed for each region
## Hiring
{a} gave an update on the two open site reliability roles, with {n} applicants so far. {b} said the take-home exercise takes candidates far too long. | Replace the take-home exercise with a paired debugging session
{a} reported that the paired sessions work well and three candidates are in the final round. | Ask two more engineers to join the interview panel
{a} announced that the first offer was accepted; the new engineer starts in four weeks, and {b} will prepare the onboarding plan. | Keep the second role open
{b} said the second role has drawn few strong candidates. {a} suggested opening it to remote candidates. | Open the role to remote candidates in European time zones
{a} introduced the new engineer, who joined on Monday and will shadow on-call for two weeks. {b} is their onboarding buddy. | Add the new engineer to the on-call rotation after shadowing
## Functions time limit
{a} reported that {n} customers asked to raise the 15-minute limit of Northwind Functions. {b} said longer runs need a different scheduler for the worker pool. | Keep the limit and document the queue-based pattern instead
{a} shared a draft of the queue-based pattern guide; {b} asked for a complete example in Python. | Publish the guide with examples in Python and Go
{a} said the guide is well received, but one large customer needs runs of about an hour. {b} suggested a job runner on Compute for them. | Offer that customer help to move the job to Compute
{a} reported that the customer moved their hour-long job to Compute, where it costs {n} percent less than before. | Close the topic and keep the 15-minute limit
## Incident review
{a} walked through last week's incident in eu-fra-1, where an expired internal certificate broke logins for {n} minutes. {b} noted that the rotation job had failed silently. | Alert whenever a certificate rotation job fails
{a} reviewed the incident in which a DNS change sent traffic to an empty load balancer pool. {b} asked why the change had not gone through a canary. | DNS changes go through the same canary process as deploys
{a} reviewed the replica lag reports from a Business customer. {b} said {n} replicas in eu-ams-1 still run on the old storage class. | Migrate the remaining replicas to the new storage class
{a} said there were no sev1 incidents this month; the only sev2 was a stuck queue consumer that delayed emails by {n} minutes. | Add a lag alert to every consumer group
{a} reviewed a near miss: a snapshot schedule blocked a customer's VM resize for {n} minutes and the console showed no reason. {b} said the console now names the snapshot. | Add resize and snapshot conflicts to the support runbook
## Team process
{a} proposed shortening this meeting from 60 to 45 minutes. {b} agreed, provided action items are updated in the tracker beforehand. | Action items are updated in the tracker before each meeting
{a} asked for volunteers to rewrite the onboarding docs. {b} said the local setup guide is badly out of date. | Split the rewrite between three volunteers
{b} raised that the runbooks are spread over three wikis. {a} proposed moving them into the docs repository. | Move all runbooks into the docs repository by the end of the quarter
{a} reported that the runbook move is {n} percent done. {b} said the networking runbooks are the hardest because they link to many old diagrams. | Move the diagrams together with the runbooks
## Kubernetes upgrade
{a} proposed upgrading the internal clusters to the next Kubernetes minor version. {b} warned that {n} workloads still use an API version that the upgrade removes. | Migrate those workloads before any cluster is upgraded
{a} reported that all but two workloads are migrated; the last two belong to the billing team, and {b} will pair with them this week. | Upgrade the staging cluster once the billing workloads are done
{a} said the staging cluster has run the new version for a week without problems. {b} asked for a rollback plan for production. | Upgrade production clusters one region at a time, with a written rollback plan
{a} reported that production is upgraded in every region. The only issue was a node pool in us-east-1 that took {n} minutes longer to drain than planned. | Raise the drain timeout for large node pools in the runbook
## Support escalations
{a} reported {n} tickets escalated from support to engineering last week, mostly about replica lag and failed backups. {b} asked for a tag so they can be counted. | Support tags every escalation with the product area
{a} said the tagged escalations show that database questions take the longest to answer. {b} suggested a weekly rotation of a database engineer in the support queue. | Start a weekly database rotation in the support queue
{a} reported that the median time to a first engineering answer fell to {n} hours with the rotation. {b} said the rotation is popular but takes a full day a week. | Keep the rotation and review the time it costs next month
{b} raised that one Business customer opened five tickets in a month. {a} offered to call them to hear about their setup directly. | Schedule a call with the customer and share the notes with support
## Security audit
{a} shared the timeline of this year's external security audit, which starts in {n} days. {b} asked who collects the evidence for access reviews. | Priya coordinates the evidence collection
{a} said the auditors asked for proof that former employees lose access within a day. {b} found two accounts that were removed late. | Automate account removal from the HR system
{a} reported the audit ended with {n} minor findings and no major ones. {b} will turn each finding into a ticket. | Fix every minor finding before the end of the quarter
{a} said automated account removal is live and was tested with {n} test accounts. {b} asked to review access every quarter instead of once a year. | Run the access review every quarter
## Observability
{a} proposed keeping metrics for 13 months instead of 30 days so that yearly trends can be compared. {b} estimated {n} percent more storage. | Keep 13 months of metrics at a coarser resolution after 30 days
{a} reported that the new retention works, but dashboards older than a month load slowly. {b} suggested precomputed recording rules for the main dashboards. | Add recording rules for the ten most used dashboards
{b} asked to add tracing to the console backend, since slow pages are hard to debug. {a} said it would add about {n} percent to the tracing volume. | Enable tracing for the console backend with 10 percent sampling
{a} demonstrated a trace of a slow console page: most of the time went to one unindexed query on the projects table. | Add the missing index and keep the trace as an example in the docs
## CI speed
{a} reported that the median CI run now takes {n} minutes, up from 12 in the autumn. {b} found that the integration tests run one after another. | Run the integration tests in four parallel shards
{a} said sharding cut CI time roughly in half, but flaky tests fail more often now. {b} listed the {n} flakiest tests. | Quarantine the flaky tests and give each an owner
{a} reported that most quarantined tests are fixed; {b} wants a rule so that no test stays in quarantine for long. | A quarantined test is fixed or deleted within two weeks
{a} proposed caching build dependencies between CI runs. {b} worried about stale caches after dependency upgrades. | Cache dependencies keyed by the hash of the lock file
## Public API v1 retirement
{a} proposed retiring version 1 of the public API, which {n} customers still call. {b} asked for at least six months' notice. | Announce the retirement with six months' notice
{a} drafted the announcement; {b} suggested listing the most common v1 calls with their v2 replacements. | Add a migration table to the announcement
{a} reported that {n} customers still call v1 three months after the announcement. {b} will contact the largest of them directly. | Account managers contact the remaining Enterprise customers
{a} said v1 traffic is below one percent of requests. {b} proposed a brownout to surface forgotten clients before the final shutdown. | Hold a four-hour brownout of v1 next month, announced two weeks ahead
## Capacity planning
{a} presented the capacity forecast: eu-ams-1 runs out of nw-large capacity in about {n} weeks at the current growth. {b} asked how long new hardware takes to arrive. | Order two more racks for eu-ams-1 now
{a} said the racks ship in six weeks. {b} proposed moving internal batch jobs to eu-fra-1 in the meantime. | Move internal batch jobs out of eu-ams-1 until the racks are in service
{a} reported that the new racks are in service and free nw-large capacity in eu-ams-1 is back at {n} percent. | Move the batch jobs back and update the forecast monthly
{b} asked whether Singapore needs the same treatment. {a} said growth there is slower and the current capacity lasts until next year. | Review ap-sin-1 capacity again in the autumn
## Game day
{a} proposed a game day in which the team restores a managed Postgres instance from backups under time pressure. {b} offered to write the scenarios. | Hold the game day in three weeks
{b} presented three scenarios: a dropped table, a lost primary and a corrupted replica. {a} asked to add a failed backup as a twist. | Use all three scenarios plus the failed-backup twist
{a} summarised the game day: the team restored the dropped table in {n} minutes, but the runbook for promoting a replica had two outdated commands. | Fix the replica runbook and repeat the game day in six months
"""

OTHER_BUSINESS = [
    "Yuki is on leave for two weeks from Monday; Grace covers her on-call shifts.",
    "The office in Amsterdam is closed on Friday for maintenance of the heating system.",
    "Reminder to submit conference talk proposals by the end of the month.",
    "The quarterly planning session moves to the large meeting room on the third floor.",
    "Daniel thanked everyone who helped with the game day; the write-up is in the wiki.",
    "Security training is due for everyone by the end of the month.",
    "Lena shared a short survey about the on-call tooling; please answer it this week.",
    "The team lunch is on Thursday at 12:30 at the usual place.",
    "Marco will present the storage roadmap at the company all-hands next week.",
    "New laptops arrive next week; Chloe collects the requests.",
    "Aisha asked everyone to add their holiday plans to the shared calendar.",
    "Samir reminded everyone that the incident review template changed last month.",
    "The support team thanked the platform team for the quick help on recent escalations.",
    "Tomas is looking for a second reviewer for the network design doc.",
]
ACTIONS = [
    "write up the decision in the design doc",
    "collect the numbers for next week",
    "draft the announcement to customers",
    "update the runbook",
    "ask the owners of the affected services for feedback",
    "send a summary to the support team",
    "open tickets for the follow-up work",
]


def meeting_minutes(rng: random.Random) -> Iterator[Block]:
    day = datetime(2025, 1, 7, 10, 0)
    stages = {
        heading[0]: [line.split(" | ") for line in lines] for heading, lines in sections(TOPICS)
    }
    other_business = rng.sample(OTHER_BUSINESS, len(OTHER_BUSINESS))
    open_items: list[tuple[str, str, int]] = []
    for number in range(1, 1000):
        live = [topic for topic, steps in stages.items() if steps]
        if not live:
            return
        attendees = sorted(rng.sample(PEOPLE, rng.randint(5, 8)))
        chair, scribe = rng.sample(attendees, 2)
        block = [
            f"Platform team weekly sync #{number} - {day:%A %d %B %Y}, {day:%H:%M} CET",
            f"Attendees: {', '.join(attendees)}. Chair: {chair}. Notes: {scribe}.",
            f"Weekly numbers: availability {rng.uniform(99.9, 100):.3f}%, {rng.randint(8, 40)}"
            f" deploys, {rng.randint(2, 30)} pages, {rng.randint(0, 3)} incidents.",
            "1. Review of open action items",
        ]
        still_open = []
        for owner, action, since in open_items:
            if rng.random() < 0.6:
                block.append(f"- {owner}: {action} - done.")
            else:
                block.append(f"- {owner}: {action} - carried over (open since meeting #{since}).")
                still_open.append((owner, action, since))
        if not open_items:
            block.append("- No open action items.")
        open_items = still_open
        for index, topic in enumerate(rng.sample(live, min(3, len(live))), start=2):
            said, decision = stages[topic].pop(0)
            a, b = (first(name) for name in rng.sample(attendees, 2))
            block += [
                f"{index}. {topic}",
                said.format(a=a, b=b, n=rng.randint(3, 40)),
                f"Decision: {decision}.",
            ]
            if rng.random() < 0.7:
                owner = first(rng.choice(attendees))
                action = f"{rng.choice(ACTIONS)} ({topic})"
                open_items.append((owner, action, number))
                due = day + timedelta(days=rng.choice([2, 7, 14]))
                block.append(f"Action: {owner} to {action} by {due:%d %B}.")
        if other_business and rng.random() < 0.7:
            block.append(f"Any other business: {other_business.pop()}")
        block += [f"Next meeting: {day + timedelta(days=7):%A %d %B}.", ""]
        day += timedelta(days=7)
        yield block


# --- 4. release notes -------------------------------------------------------------------------

COMMANDS = [
    "nw vm create",
    "nw vm resize",
    "nw db backup list",
    "nw db replica promote",
    "nw drift bucket sync",
    "nw drift lifecycle set",
    "nw functions deploy",
    "nw functions logs",
    "nw projects members add",
    "nw billing credits list",
    "nw auth login",
    "nw status",
]
FLAGS = ["--region", "--output json", "--wait", "--dry-run", "--tag", "--timeout", "--project"]
NOTES = """
## Breaking
`{cmd}` returns exit code 3 instead of 1 when a resource is not found.
`{cmd}` requires `{flag}` in non-interactive shells.
`{cmd}` prints JSON with snake_case keys; scripts that read camelCase keys must be updated.
Support for config files in the old INI format is removed; run `nw config migrate`.
`{cmd}` no longer reads credentials from `NW_TOKEN`; use `nw auth login` or a service account key.
## Added
`{cmd}` accepts `{flag}`.
`{cmd} --all` works across every project you can access.
Shell completion for `{cmd}` in zsh and fish.
`{cmd}` shows the estimated monthly cost before it makes a change.
`{cmd}` can read its arguments from a YAML file with `--from-file`.
Progress bars for long operations in `{cmd}`.
`{cmd}` can target a project by name as well as by ID.
## Changed
`{cmd}` waits for the operation to finish unless `--no-wait` is given.
`{cmd}` lists resources sorted by creation time, newest first.
The default region is read from `NW_REGION` before the config file.
`{cmd}` asks for confirmation before deleting more than ten resources.
Error messages of `{cmd}` include the request ID to quote to support.
`{cmd}` retries rate-limited requests up to five times with backoff.
## Fixed
`{cmd}` no longer hangs when the network drops during an upload.
`{cmd}` returned the wrong exit code when `{flag}` was given.
Timestamps in the output of `{cmd}` are shown in UTC as documented.
A crash of `{cmd}` on Windows when a path contained spaces.
`{cmd}` ignored `{flag}` when it was set in the config file.
`{cmd}` printed a misleading permission error for expired sessions.
High memory use of `{cmd}` on very large listings.
## Deprecated
`{cmd} {flag}` is deprecated and will be removed in the next major release; set it in the config file instead.
The short alias of `{cmd}` is deprecated; use the full command name.
## Security
`{cmd}` no longer writes the session token to the debug log.
Config files are created readable by their owner only.
"""


def release_notes(rng: random.Random) -> Iterator[Block]:
    notes = {heading[0]: lines for heading, lines in sections(NOTES)}
    day = datetime(2023, 2, 6)
    for major in range(2, 100):
        for minor in range(rng.randint(3, 6)):
            for patch in range(rng.randint(1, 3)):
                day += timedelta(days=rng.randint(6, 30))
                block = [f"## nw CLI {major}.{minor}.{patch} ({day:%Y-%m-%d})"]
                kinds = ["Fixed"] if patch else ["Added", "Changed", "Fixed"]
                if minor == 0 and patch == 0:
                    kinds.insert(0, "Breaking")
                if not patch and rng.random() < 0.3:
                    kinds.append("Deprecated")
                if rng.random() < 0.1:
                    kinds.append("Security")
                for kind in kinds:
                    block.append(f"### {kind}")
                    for note in rng.sample(notes[kind], rng.randint(1, min(3, len(notes[kind])))):
                        text = note.format(cmd=rng.choice(COMMANDS), flag=rng.choice(FLAGS))
                        block.append(f"- {text} (#{rng.randint(1200, 4800)})")
                yield [*block, ""]


# --- output -----------------------------------------------------------------------------------

DOCUMENTS: list[tuple[str, str, Callable[[random.Random], Iterator[Block]], bool]] = [
    (
        "the production incident log of an online shop's platform",
        "How many distinct incidents appear in this excerpt? For each, name the service where it"
        " started and its root cause, and say which first guess of the on-call engineer was wrong.",
        incident_log,
        False,
    ),
    (
        "a support ticket thread between Larkspur Analytics and Northwind Cloud",
        "Summarise the problems the customer reported in this excerpt, the workaround offered for"
        " each, and which tickets were still open at the end of the excerpt.",
        support_thread,
        False,
    ),
    (
        "the minutes of the Northwind platform team's weekly meetings",
        "List every action item assigned in this excerpt with its owner, and count how many"
        " action items were carried over at least once.",
        meeting_minutes,
        False,
    ),
    (
        "the release notes of the Northwind command-line tool",
        "Which breaking changes and deprecations appear in this excerpt, in which versions, and"
        " what should a user upgrading across all of them check first?",
        release_notes,
        True,
    ),
]


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_files_dir())
    rng = random.Random(SEED)
    with OUT.open("w") as out:
        for title, question, generate, newest_first in DOCUMENTS:
            blocks: list[list[dict[str, str | int]]] = []
            total = 0
            for block in generate(rng):
                counts = [
                    len(tokenizer.encode(text + "\n", add_special_tokens=False)) for text in block
                ]
                blocks.append(
                    [{"text": t, "tokens": c} for t, c in zip(block, counts, strict=True)]
                )
                total += sum(counts)
                if total >= TARGET_TOKENS:
                    break
            if total < MIN_TOKENS:
                raise SystemExit(f"{title}: only {total} tokens, write more text for it")
            if newest_first:
                blocks.reverse()
            lines = [line for block in blocks for line in block]
            row = {"title": title, "question": question, "lines": lines}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(f"{total:6d} tokens, {len(lines):4d} lines: {title}")


if __name__ == "__main__":
    main()
