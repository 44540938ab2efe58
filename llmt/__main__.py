from llmt.cli import main

main()
