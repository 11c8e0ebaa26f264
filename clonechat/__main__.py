from clonechat.cli import main

main()
