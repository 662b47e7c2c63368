from facevalue.console import main

main()
