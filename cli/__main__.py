from rkd.cli.main import main

main()
