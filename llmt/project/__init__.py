"""Loading a project: project.yml, models, properties, sources, config precedence."""

from llmt.project.loader import Node, Project, load_project

__all__ = ["Node", "Project", "load_project"]
