"""`python -m cloudstack_storpool`: the same CLI as the console script."""

from cloudstack_storpool.cli import main

main()
