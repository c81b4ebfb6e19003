"""PREPARE_JOB hook: hold a job whose Lark attributes this node cannot honour, before it starts.

Runs as the job's user in the host namespace with the job ad on stdin. Prints nothing for a good
request. For a bad one it prints ``HookStatusCode`` (1-299 holds the job) and a
``HookStatusMessage`` the user can act on; HTCondor turns that into the HoldReason. The broker
validates again (it trusts no hook), so this is about a fast, clear answer, not security.
"""

from __future__ import annotations

import os
import sys

HOLD_CODE = 190  # HoldReasonSubCode the user sees; 1-299 means "hold", >= 300 would retry forever


def hook_output(ad_text: str) -> tuple[str, int]:
    """The hook's stdout for a job ad, and the code (0: fine)."""
    import classad2

    from lark.classads import job_attributes
    from lark.config import condor_param, load_config
    from lark.errors import ConfigError, LarkError
    from lark.profiles import load_profiles, profile_dir, request_for_job, user_and_groups

    try:
        config = load_config(external=condor_param)
    except ConfigError as err:
        # a broken node config is the admin's problem, not the user's: let the job through so the
        # broker's own refusal (and log) tells the admin, instead of holding every job
        return f"HookStatusCode = 0\nHookStatusMessage = {classad2.quote('Lark node config: ' + str(err))}\n", 0
    try:
        ad = classad2.parseOne(ad_text, classad2.ParserType.Old)
        # evaluated, with expressions kept for what evaluates to undefined or error, so the hold
        # reason can show what the user wrote (the broker reads the same attributes the same way)
        attrs = job_attributes(ad, prefix="lark")
        job_id = f"{ad.get('ClusterId', '?')}.{ad.get('ProcId', '?')}"
        request_for_job(attrs, lambda: load_profiles(profile_dir(config, condor_param), config, missing_ok=True),
                        config, job_id, lambda: user_and_groups(os.getuid()))
    except LarkError as err:
        message = f"Lark: {err}"
        return f"HookStatusCode = {HOLD_CODE}\nHookStatusMessage = {classad2.quote(message)}\n", HOLD_CODE
    except Exception as err:  # an unparsable ad: tell HTCondor, do not crash the hook
        message = f"Lark: cannot read the job ad: {err}"
        return f"HookStatusCode = {HOLD_CODE}\nHookStatusMessage = {classad2.quote(message)}\n", HOLD_CODE
    return "", 0


USAGE = """usage: lark-prepare-job < JOB_AD

HTCondor's PREPARE_JOB hook on a Lark execute node (LARK_HOOK_PREPARE_JOB): reads the job ad on
stdin and prints nothing for a job this node can set up, or HookStatusCode and HookStatusMessage
to hold it with a reason. Always exits 0 (HTCondor reads the verdict from the output)."""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args:  # HTCondor passes no arguments: anything given is a person asking
        if args == ["--version"]:
            from lark import __version__

            print(f"lark-prepare-job {__version__}")
            sys.exit(0)
        print(USAGE, file=sys.stdout if args in (["--help"], ["-h"]) else sys.stderr)
        sys.exit(0 if args in (["--help"], ["-h"]) else 2)
    out, _code = hook_output(sys.stdin.read())
    sys.stdout.write(out)
    sys.exit(0)


if __name__ == "__main__":
    main()
