from resgan.cli import main

if __name__ == "__main__":  # a process started with spawn imports this module without running the CLI
    main()
