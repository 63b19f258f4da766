from rkd.cli.main import main

if __name__ == "__main__":  # a spawned worker importing rkd.cli must not run the CLI
    main()
