from medsight.cli import main

main()
