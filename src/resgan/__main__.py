from resgan.cli import main

main()
