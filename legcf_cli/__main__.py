from legcf_cli.app import main

main()
