"""memcache-server(1), rendered from the options table.

The page is generated, never edited: ``python -m memcache_server.manpage >
docs/man/man1/memcache-server.1`` rewrites it, and a test fails when the committed page differs
from what the table gives, so a new flag cannot ship undocumented. Pure text: no I/O but the
``__main__`` print.
"""

from __future__ import annotations

from memcache_server import __version__
from memcache_server.options import OPTIONS, Option

__all__ = ["render"]

_VALUE = {"flag": "", "int": "=N", "int?": "[=N]", "float": "=R", "str": "=S"}
_METAVAR = {
    **dict.fromkeys(("-p", "-U"), "PORT"),
    **dict.fromkeys(("-s", "-P", "-Y", "-e"), "FILE"),
    **dict.fromkeys(("-c", "-t", "-R", "-b"), "NUM"),
    "-l": "ADDR",
    "-a": "MASK",
    "-m": "MB",
    "-u": "USER",
    "-I": "SIZE",
    "-f": "FACTOR",
    "-n": "BYTES",
    "-B": "PROTO",
    "-o": "OPTS",
    "-D": "CHAR",
}


def _roff(text: str) -> str:
    """Escape what roff would read as requests or escapes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _flag_item(option: Option) -> str:
    takes_value = not (option.cli.get("is_flag") or option.cli.get("count"))
    spelled = ", ".join(f"\\fB{_roff(f)}\\fR" for f in option.flags)
    if takes_value:
        metavar = str(option.cli.get("metavar") or _METAVAR.get(option.flags[0], "VALUE"))
        spelled += f" \\fI{_roff(metavar)}\\fR"
    default = option.click_default
    shown = ""
    if takes_value and default not in (None, "", False) and not isinstance(default, tuple):
        shown = f" (default: {_roff(str(default))})"
    return f".TP\n{spelled}\n{_roff(option.help)}{shown}\n"


def render() -> str:
    """The whole page, in man(7) macros."""
    flags = [o for o in OPTIONS if o.flags]
    subs = sorted((o for o in OPTIONS if o.sub), key=lambda o: o.sub)
    out = [
        '.TH MEMCACHE\\-SERVER 1 "" "memcache-server ' + __version__ + '" "User Commands"\n',
        ".SH NAME\nmemcache\\-server \\- a memcached\\-compatible cache node with cluster "
        "auto discovery\n",
        ".SH SYNOPSIS\n\\fBmemcache\\-server\\fR [\\fIOPTIONS\\fR]\n.br\n"
        "\\fBmemcache\\-server config\\-node\\fR \\fB\\-\\-state\\-file\\fR \\fIFILE\\fR "
        "[\\fIOPTIONS\\fR]\n.br\n\\fBmemcache\\-server cluster\\fR "
        "\\fBnodes\\fR|\\fBremove\\fR|\\fBowner\\fR ...\n",
        ".SH DESCRIPTION\nA cache node that takes memcached's flags and answers its text and meta "
        "protocols as memcached 1.6.18 does. Nodes hold no persistent data. A configuration "
        "node publishes the cluster's node list as ElastiCache does, so clients hash keys "
        "across the nodes. Each subcommand's own flags: \\fBmemcache\\-server "
        "\\fICOMMAND\\fB \\-h\\fR.\n",
        ".SH OPTIONS\n",
        *(_flag_item(o) for o in flags),
        ".SH EXTENDED OPTIONS\nGiven as \\fB\\-o\\fR \\fINAME\\fR[=\\fIVALUE\\fR][,...], "
        "under memcached's names.\n",
        *(f".TP\n\\fB{_roff(o.sub + _VALUE[o.kind])}\\fR\n{_roff(o.help)}\n" for o in subs),
        ".SH ENVIRONMENT\nEach flag can be given as \\fBMEMCACHE_SERVER_\\fR\\fILONG_FLAG\\fR "
        "(\\fBMEMCACHE_SERVER_MEMORY_LIMIT=1024\\fR); a subcommand's as "
        "\\fBMEMCACHE_SERVER_\\fR\\fICOMMAND\\fR_\\fIFLAG\\fR. The command line wins.\n",
        ".SH EXIT STATUS\nAs memcached: 0 on a clean stop; 1 for most refusals at start; 64 "
        "for the item size and protocol refusals and unusable TLS files; 71 when an address "
        "cannot be listened on; killed by SIGABRT (134 in a shell) when the \\fB\\-e\\fR file "
        "cannot be opened or mapped.\n",
        ".SH SEE ALSO\n\\fBmemcached\\fR(1)\n",
    ]
    return "".join(out)


if __name__ == "__main__":
    print(render(), end="")
