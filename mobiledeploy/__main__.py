from mobiledeploy.cli import main

main()
