from portway.cli import main

main()
