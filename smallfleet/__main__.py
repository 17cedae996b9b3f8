from smallfleet.cli import main

main()
