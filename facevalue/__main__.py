from facevalue.cli import main

main()
